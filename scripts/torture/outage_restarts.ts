/**
 * Restarts during an outage (reference/store-forward.md (d), test 4; Prometheus #13539, where a
 * restart during an outage drops the backlog): the central PostgreSQL is stopped, the collector
 * is restarted `iterations` times while it is down (SIGTERM and SIGKILL mixed), then PostgreSQL
 * comes back and the whole backlog must arrive exactly once.
 */
import { finalDrain, sleep, spoolRows } from "../harness/collector.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { type Life, pollFailed, spoolSalvaged, unexpectedLogLines } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

const SERIES = 10;

export async function runOutageRestarts(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { restarts: size.iterations });
  const { random, problems, notes, counts } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: SERIES });
  const rig = await run.rig({ pg, exporter, settings: { forward_batch_rows: 1000 } });
  const lives: Life[] = [];
  const unexpected: string[] = [];
  let collector = run.collector(rig.config);
  let first = exporter.served() + 1;
  while (exporter.served() < 10) await sleep(50);
  await pg.stop();
  const outageFrom = exporter.served() + 1;
  let sigterms = 0;
  let livesWithoutPoll = 0;
  for (let i = 0; i < size.iterations; i++) {
    const lifeStart = performance.now();
    const before = exporter.served();
    await sleep(300 + random() * 1700);
    const signal = random() < 0.5 ? "SIGTERM" : "SIGKILL";
    const status = await collector.stop(signal);
    if (signal === "SIGTERM") {
      sigterms++;
      // Killed by the SIGTERM itself is a clean stop only before the process could take its
      // signals (the runtime was still starting: main.ts takes them before it logs anything).
      const beforeHandlers = status.signal === "SIGTERM" && collector.logs().length === 0;
      if (beforeHandlers) notes.push(`restart ${i}: SIGTERM arrived while the runtime was starting (killed by it)`);
      else if (status.code !== 0) problems.push(`restart ${i}: SIGTERM during the outage gave exit ${status.code}`);
    }
    const lived = performance.now() - lifeStart;
    if (exporter.served() === before && lived > 1500) livesWithoutPoll++;
    lives.push({ first, last: exporter.served(), stop: signal, pollFailed: pollFailed(collector.logs()) });
    unexpected.push(...unexpectedLogLines(collector.logs()));
    if (spoolSalvaged(collector.logs())) problems.push(`restart ${i} found the spool damaged`);
    first = exporter.served() + 1;
    collector = run.collector(rig.config);
  }
  await sleep(1000);
  const backlog = await spoolRows(rig.config);
  const outageValues = exporter.served() - outageFrom + 1;
  await pg.start();
  const drainStart = performance.now();
  // Caught up: the spool holds no more than a few polls.
  let left = backlog;
  while (performance.now() - drainStart < 60_000 && (left = await spoolRows(rig.config)) > SERIES * 5) {
    await sleep(200);
  }
  const drainMs = Math.round(performance.now() - drainStart);
  if (left > SERIES * 5) problems.push(`the backlog did not drain within 60 s (${left} samples left)`);
  const last = collector;
  problems.push(...await finalDrain(last, rig.config));
  lives.push({ first, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(last.logs()) });
  unexpected.push(...unexpectedLogLines(last.logs()));
  const reachable = last.logs().some((l) => /Central database reachable again/.test(l));
  if (!reachable) notes.push("The last collector never logged 'Central database reachable again'");

  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, {
    lives,
    problem: "served values missing with no kill to explain them",
  });
  if (livesWithoutPoll > 0) problems.push(`${livesWithoutPoll} collector runs during the outage never polled`);
  if (backlog < SERIES * 10) problems.push(`the backlog at the end of the outage was only ${backlog} samples`);
  Object.assign(counts, {
    sigterm: sigterms,
    sigkill: size.iterations - sigterms,
    outageServed: outageValues,
    backlogAtRecovery: backlog,
    drainMs,
    ...deliveryCounts(check),
  });
  if (unexpected.length) notes.push(`Unexpected log lines: ${unexpected.slice(0, 5).join(" | ")}`);
  return run.result({
    name: "restarts during an outage",
    fault: `PostgreSQL stopped; the collector restarted ${size.iterations} times meanwhile (SIGTERM and SIGKILL mixed)`,
    criteria: "the whole backlog delivered exactly once after PostgreSQL returns, no ledger gap, " +
      "polling through every restart",
  });
}
