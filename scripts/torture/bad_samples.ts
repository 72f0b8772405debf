/**
 * Samples that cannot be sent because of themselves (issue: one bad timestamp stopped delivery
 * for every device, for ever). A second exporter beside the counting one serves, on every
 * scrape, exposition timestamps in nanoseconds and microseconds, one beyond any calendar, and a
 * kwollect_custom line whose `_timestamp` is in microseconds, among good lines; the spool also
 * starts with two such samples written by an older kwollector, before the door checked them.
 * The collector is restarted `iterations` times (a restart used not to help).
 *
 * Pass: the bad lines are refused with an error naming the unit they look like, the good lines of
 * the same exporter are stored, the two old samples are quarantined alone, every sample of the
 * counting exporter arrives exactly once, its polls keep their schedule, and flush exits 0.
 */
import { finalDrain, sleep } from "../harness/collector.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { type Life, pollFailed, scheduleOf } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

const PERIOD_MS = 100;
const BAD_LINES = [
  "x_nanoseconds 1 1733380000000000000",
  "x_microseconds 2 1733380000000000",
  "x_beyond 3 99999999999999999",
  'kwollect_custom{_metric_id="custom_microseconds",_timestamp="1733380000000000"} 4',
];
const GOOD_LINES = ['kwollect_custom{_metric_id="custom_ok"} 5', "good_line 6"];

export async function runBadSamples(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { restarts: size.iterations });
  const { problems, counts } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: 1 });
  const hostile = run.exporter({ series: 1, extraLines: [...BAD_LINES, ...GOOD_LINES] });
  const rig = await run.rig({
    pg,
    exporter,
    periodMs: PERIOD_MS,
    extraEntries: `- name: hostile\n  device_id: hostile-1\n  url: prometheus://127.0.0.1:${hostile.port}/\n` +
      "  update_every: 1000\n",
  });
  // What an older kwollector left in the spool: nanoseconds, and beyond any calendar.
  const old = openSpool({
    path: rig.spoolPath,
    maxBytes: 1 << 30,
    fullPolicy: "drop_oldest",
    synchronous: "full",
    commitIntervalMs: 1,
  });
  await old.writer.append([
    { timestampMs: 1_733_380_000_000_000_000, deviceId: "legacy-1", metricId: "x", value: 1, labels: {} },
    { timestampMs: 99_999_999_999_999_999, deviceId: "legacy-1", metricId: "x", value: 2, labels: {} },
  ]);
  old.close();
  const lives: Life[] = [];
  const logs: string[] = [];
  let first = 1;
  let collector = run.collector(rig.config);
  for (let i = 0; i <= size.iterations; i++) {
    await sleep(3000);
    if (i === size.iterations) break;
    const status = await collector.stop("SIGTERM");
    if (status.code !== 0) problems.push(`restart ${i}: SIGTERM gave exit ${status.code}`);
    lives.push({ first, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(collector.logs()) });
    logs.push(...collector.logs());
    first = exporter.served() + 1;
    collector = run.collector(rig.config);
  }
  const last = collector;
  problems.push(...await finalDrain(last, rig.config));
  lives.push({ first, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(last.logs()) });
  logs.push(...last.logs());

  // Within each run of the collector (a restart is no schedule miss).
  const runs = lives.map((l) =>
    scheduleOf(exporter, { from: l.first, to: l.last, periodMs: PERIOD_MS, toleranceMs: 100 })
  );
  const schedule = {
    longestGapMs: Math.max(...runs.map((r) => r.longestGapMs)),
    onTime: runs.reduce((n, r) => n + r.onTime * r.polls, 0) / runs.reduce((n, r) => n + r.polls, 0),
  };
  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, { lives, problem: "served values missing" });
  const sql = pg.admin("kwdb");
  try {
    const stored = await sql<{ metric_id: string; n: number }[]>`
      SELECT metric_id, count(*)::int AS n FROM metrics WHERE device_id = 'hostile-1' GROUP BY 1 ORDER BY 1`;
    const storedIds = stored.map((r) => r.metric_id);
    for (const id of ["custom_ok", "prom_good_line", "prom_scrape_count"]) {
      if (!storedIds.includes(id)) problems.push(`the good line ${id} of the hostile exporter was not stored`);
    }
    for (const id of ["prom_x_nanoseconds", "prom_x_microseconds", "prom_x_beyond", "custom_microseconds"]) {
      if (storedIds.includes(id)) problems.push(`the bad line ${id} was stored`);
    }
    const scrapes = stored.find((r) => r.metric_id === "prom_scrape_count")?.n ?? 0;
    if (scrapes !== hostile.served()) {
      problems.push(`the hostile exporter served ${hostile.served()} scrapes, ${scrapes} are central`);
    }
    counts.hostileScrapes = hostile.served();
  } finally {
    await sql.end({ timeout: 1 });
  }
  const legacy = check.quarantine.filter((q) => q.deviceId === "legacy-1");
  if (legacy.length !== 2) problems.push(`${legacy.length} of the 2 old bad samples were quarantined`);
  const refusals = logs.filter((l) => /Metric entry failing/.test(l));
  if (!refusals.some((l) => /looks like nanoseconds/.test(l))) {
    problems.push(`no log line names the nanoseconds mistake: ${refusals.slice(0, 2).join(" | ")}`);
  }
  if (logs.some((l) => /Central database unreachable|Unexpected|CRITICAL/.test(l))) {
    problems.push(`misleading log lines: ${logs.filter((l) => /unreachable|Unexpected|CRITICAL/.test(l))[0]}`);
  }
  if (schedule.longestGapMs > 1000) {
    problems.push(`the counting exporter's polls stopped for ${schedule.longestGapMs} ms`);
  }
  Object.assign(counts, {
    ...deliveryCounts(check),
    legacyQuarantined: legacy.length,
    longestPollGapMs: schedule.longestGapMs,
    pollsWithin100ms: Number(schedule.onTime.toFixed(3)),
  });
  return run.result({
    name: "samples that cannot be sent",
    fault: `an exporter serving timestamps in ns and µs, one beyond any calendar, a kwollect_custom _timestamp ` +
      `in µs, and 2 such samples already spooled; ${size.iterations} restarts`,
    criteria: "bad samples refused or quarantined alone with the unit named, every other sample central exactly " +
      "once, the other device on schedule, flush exits 0",
  });
}
