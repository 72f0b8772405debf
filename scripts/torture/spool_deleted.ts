/**
 * The spool file deleted under the running collector (issue: no warning, and its unsent rows
 * were lost at stop). PostgreSQL is down, so every sample is still in the spool when the file
 * is deleted, `iterations` times, a second or two apart. The collector must say so, write the
 * file back within a second, keep polling, and deliver every committed sample exactly once when
 * PostgreSQL returns; `status` must never report the spool as never created.
 */
import { finalDrain, kwollector, sleep } from "../harness/collector.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { pollFailed } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

export async function runSpoolDeleted(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { deletions: size.iterations });
  const { problems } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: 5 });
  const rig = await run.rig({ pg, exporter });
  await pg.stop();
  const collector = run.collector(rig.config);
  await sleep(1500);
  let restoredWithinOneSecond = 0;
  for (let i = 0; i < size.iterations; i++) {
    await Deno.remove(rig.spoolPath);
    const deletedAt = performance.now();
    let back = false;
    while (performance.now() - deletedAt < 5000) {
      try {
        Deno.statSync(rig.spoolPath);
        back = true;
        break;
      } catch { /* not yet */ }
      await sleep(20);
    }
    if (!back) problems.push(`deletion ${i}: the spool file was not written back within 5 s`);
    else if (performance.now() - deletedAt <= 1500) restoredWithinOneSecond++;
    const status = await kwollector(["status", rig.config, "--json"]);
    const report = JSON.parse(status.stdout);
    if (report.spool_error !== null) problems.push(`deletion ${i}: status says the spool ${report.spool_error}`);
    await sleep(700 + run.random() * 1500);
  }
  const logs = collector.logs();
  const reported = logs.filter((l) => /Spool file was deleted or replaced/.test(l)).length;
  if (reported !== size.iterations) problems.push(`${reported} of ${size.iterations} deletions were logged`);
  await pg.start();
  await sleep(2000);
  problems.push(...await finalDrain(collector, rig.config));
  const lives = [{ first: 1, last: exporter.served(), stop: "SIGTERM" as const, pollFailed: pollFailed(logs) }];
  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, { lives, problem: "served values missing" });
  Object.assign(run.counts, { restoredWithin1500ms: restoredWithinOneSecond, ...deliveryCounts(check) });
  return run.result({
    name: "spool file deleted while running",
    fault: `the spool file deleted ${size.iterations} times under the running collector, PostgreSQL down`,
    criteria: "each deletion logged and the file written back, status always reads it, every committed sample " +
      "central exactly once",
  });
}
