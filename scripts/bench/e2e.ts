/**
 * End to end, sample → central row (reference/performance.md rows 11, 12 and 13): the real
 * collector (`kwollector run`, default settings) polls a Prometheus exporter of 10,000 metrics
 * every second (10,000 samples/s) into a real PostgreSQL, with an empty spool (no backlog).
 * After WARMUP_S, for MEASURE_S: the time from each sample's timestamp to the commit that made
 * it visible in `metrics` (p50, p99, worst), the samples delivered per second, the collector's
 * RSS and CPU; and, from the start, process start → first poll. About 50 s.
 *
 *   deno run -A scripts/bench/e2e.ts
 */
import { setLogSink } from "../../src/log.ts";
import { report } from "./report.ts";
import { LIVE_METRICS, liveArrival, processCpuMs, processRssMb, spawnCollector, startLiveRig } from "./collector.ts";
import { sleep } from "../harness/collector.ts";

setLogSink(() => {});
const WARMUP_S = 5;
const MEASURE_S = 30;
const rate = new Intl.NumberFormat("en-US").format(LIVE_METRICS);

const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-e2e-" });
try {
  await using rig = await startLiveRig(dir);
  const { pg, yaml } = rig;
  const admin = pg.admin("kwdb");
  const startedMs = Date.now();
  const child = spawnCollector([yaml]);
  const pid = await child.pid();
  const rss: number[] = [];
  let cpuMs = NaN;
  try {
    await sleep(WARMUP_S * 1000);
    const cpu0 = processCpuMs(pid);
    for (let s = 0; s < MEASURE_S; s++) {
      await sleep(1000);
      rss.push(processRssMb(pid));
    }
    cpuMs = processCpuMs(pid) - cpu0;
    // Samples of the last second of the window are still on their way: let them land.
    await sleep(3000);
  } finally {
    await child.stop();
  }
  const windowStartMs = startedMs + WARMUP_S * 1000;
  const windowEndMs = windowStartMs + MEASURE_S * 1000;
  const measured = await liveArrival(admin, windowStartMs, windowEndMs);
  const first = await liveArrival(admin, startedMs, windowEndMs);
  const conditions = `${rate} samples/s (${rate} metrics at 1 Hz, one exporter), no backlog`;
  report({
    name: "e2e_latency_p50",
    figure: `end to end, sample timestamp → central commit, p50, at ${conditions}`,
    value: measured.p50S,
    unit: "s",
    goal: { op: "<=", value: 0.5 },
  });
  report({
    name: "e2e_latency_p99",
    figure: "end to end, sample timestamp → central commit, p99",
    value: measured.p99S,
    unit: "s",
    goal: { op: "<=", value: 2 },
  });
  report({
    name: "e2e_latency_max",
    figure: "end to end, sample timestamp → central commit, worst sample",
    value: measured.maxS,
    unit: "s",
  });
  report({
    name: "e2e_delivered_rate",
    figure: `end to end: samples of the ${MEASURE_S} s window committed centrally, per second`,
    value: measured.rows / MEASURE_S,
    unit: "samples/s",
    goal: { op: ">=", value: LIVE_METRICS },
  });
  report({
    name: "collector_rss_at_10k_per_s_max",
    figure: `collector RSS at ${conditions}, max over the window`,
    value: Math.max(...rss),
    unit: "MB",
    goal: { op: "<=", value: 120 },
  });
  report({
    name: "collector_cpu_at_10k_per_s",
    figure: `collector CPU at ${conditions} (poll, parse, spool, forward)`,
    value: (100 * cpuMs) / (MEASURE_S * 1000),
    unit: "% of one core",
  });
  report({
    name: "start_to_first_poll",
    figure: "process start → first poll, empty spool (first sample timestamp; every group polls once at start)",
    value: first.firstSampleMs === undefined ? NaN : (first.firstSampleMs - startedMs) / 1000,
    unit: "s",
    goal: { op: "<=", value: 0.5 },
  });
} finally {
  await Deno.remove(dir, { recursive: true });
}
