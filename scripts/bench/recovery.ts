/**
 * Recovery after central outages (issue 11, item 6): the real collector (`kwollector run`,
 * default settings) polls 10,000 metrics every second into a real PostgreSQL, which is stopped
 * for BENCH_OUTAGE_S (default 30) and started again, BENCH_OUTAGES times (default 10), with
 * BENCH_SETTLE_S (default 15) of normal operation in between. For each outage: the time from the
 * central database's return to the commit of the first live sample (a sample taken after the
 * return), and the freshness of the live samples taken in the SETTLE window after it, while the
 * outage's backlog drains. About 8 minutes.
 *
 * The return is `pg_postmaster_start_time()`: the moment the server process started, a little
 * before it accepts connections, so the figure errs on the long side. Commit times come from
 * the server (`track_commit_timestamp`), sample timestamps from the collector, on one clock.
 *
 *   deno run -A scripts/bench/recovery.ts
 */
import { setLogSink } from "../../src/log.ts";
import { percentile, report } from "./report.ts";
import { LIVE_DEVICE, LIVE_METRICS, liveArrival, spawnCollector, startLiveRig } from "./collector.ts";
import { sleep } from "../harness/collector.ts";

setLogSink(() => {});
const OUTAGES = Number(Deno.env.get("BENCH_OUTAGES") ?? 10);
const OUTAGE_S = Number(Deno.env.get("BENCH_OUTAGE_S") ?? 30);
const SETTLE_S = Number(Deno.env.get("BENCH_SETTLE_S") ?? 15);
const WARMUP_S = 5;
const rate = new Intl.NumberFormat("en-US").format(LIVE_METRICS);

const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-recovery-" });
try {
  await using rig = await startLiveRig(dir);
  const { pg, yaml } = rig;
  const child = spawnCollector([yaml]);
  const firstLiveS: number[] = [];
  const freshP99S: number[] = [];
  let freshMaxS = 0;
  try {
    await sleep(WARMUP_S * 1000);
    for (let i = 0; i < OUTAGES; i++) {
      await pg.stop();
      await sleep(OUTAGE_S * 1000);
      await pg.start();
      const admin = pg.admin("kwdb");
      const [started] = await admin<{ ms: number }[]>`
        SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000)::float8 AS ms`;
      const returnMs = started!.ms;
      let firstCommitMs: number | undefined;
      for (let waited = 0; waited < 60_000 && firstCommitMs === undefined; waited += 100) {
        await sleep(100);
        const [row] = await admin<{ ms: number | null }[]>`
          SELECT (extract(epoch FROM min(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS ms
          FROM metrics WHERE device_id = ${LIVE_DEVICE} AND "timestamp" >= ${new Date(returnMs)}`;
        firstCommitMs = row!.ms ?? undefined;
      }
      firstLiveS.push(firstCommitMs === undefined ? NaN : (firstCommitMs - returnMs) / 1000);
      await sleep(SETTLE_S * 1000);
      // Live samples taken after the first live commit, while the outage's backlog drains.
      const fresh = await liveArrival(admin, firstCommitMs ?? returnMs, Date.now() - 3000);
      freshP99S.push(fresh.p99S);
      freshMaxS = Math.max(freshMaxS, fresh.maxS);
      console.error(
        `recovery: outage ${i + 1}/${OUTAGES}: first live sample ${firstLiveS.at(-1)?.toFixed(2)} s ` +
          `after the return, then freshness p99 ${fresh.p99S.toFixed(2)} s`,
      );
      await admin.end();
    }
  } finally {
    await child.stop();
  }
  const conditions = `${OUTAGES} outages of ${OUTAGE_S} s (PostgreSQL stopped and started), ${rate} samples/s`;
  report({
    name: "outage_return_to_first_live_p99",
    figure: `central database's return → first live sample committed centrally, p99 over ${conditions}`,
    value: percentile(firstLiveS, 99),
    unit: "s",
    goal: { op: "<=", value: 5 },
  });
  report({
    name: "outage_return_to_first_live_p50",
    figure: "central database's return → first live sample committed centrally, p50",
    value: percentile(firstLiveS, 50),
    unit: "s",
  });
  report({
    name: "outage_return_to_first_live_max",
    figure: "central database's return → first live sample committed centrally, worst outage",
    value: Math.max(...firstLiveS),
    unit: "s",
  });
  report({
    name: "outage_drain_live_freshness_p99",
    figure: `live freshness (sample timestamp → central commit) in the ${SETTLE_S} s after the first live ` +
      "commit, while the outage's backlog drains: p99, worst outage",
    value: Math.max(...freshP99S),
    unit: "s",
    goal: { op: "<=", value: 2 },
  });
  report({
    name: "outage_drain_live_freshness_max",
    figure: "live freshness while an outage's backlog drains, worst sample of all outages",
    value: freshMaxS,
    unit: "s",
  });
} finally {
  await Deno.remove(dir, { recursive: true });
}
