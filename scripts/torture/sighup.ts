/**
 * SIGHUP (issue: it killed `run` at once, with no log and no clean stop). The collector is sent
 * SIGHUP `iterations` times while it polls and forwards; half-way, metrics.d gains an entry for a
 * second exporter. Each SIGHUP must reload metrics.d (logged), finish and commit the polls in
 * flight, and go on: every sample of the first exporter arrives exactly once, the second
 * exporter is polled after the reload that added it, and SIGTERM still stops with exit 0.
 */
import { finalDrain, sleep } from "../harness/collector.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { pollFailed } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

export async function runSighup(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { hangups: size.iterations });
  const { problems } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: 5 });
  const added = run.exporter({ series: 1 });
  const rig = await run.rig({ pg, exporter });
  const collector = run.collector(rig.config);
  await sleep(1500);
  const pid = await collector.pid();
  let servedBeforeAdding = 0;
  for (let i = 0; i < size.iterations; i++) {
    if (i === Math.floor(size.iterations / 2)) {
      servedBeforeAdding = added.served();
      await Deno.writeTextFile(
        `${rig.dir}/metrics.d/added.yaml`,
        `- name: added\n  device_id: added-1\n  url: prometheus://127.0.0.1:${added.port}/scrape_count\n` +
          "  update_every: 200\n",
      );
    }
    Deno.kill(pid, "SIGHUP");
    await sleep(600 + run.random() * 1000);
  }
  await sleep(1000);
  const logs = collector.logs();
  const reloads = logs.filter((l) => /metrics_dir read again \(SIGHUP\)/.test(l)).length;
  if (reloads !== size.iterations) problems.push(`${reloads} of ${size.iterations} SIGHUPs reloaded metrics.d`);
  const addedPolls = added.served() - servedBeforeAdding;
  if (addedPolls === 0) problems.push("the exporter added to metrics.d was never polled after the reload");
  problems.push(...await finalDrain(collector, rig.config));
  const lives = [{ first: 1, last: exporter.served(), stop: "SIGTERM" as const, pollFailed: pollFailed(logs) }];
  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, { lives, problem: "served values missing" });
  Object.assign(run.counts, { reloads, addedExporterPolls: addedPolls, ...deliveryCounts(check) });
  return run.result({
    name: "SIGHUP while running",
    fault: `SIGHUP sent ${size.iterations} times to the running collector, metrics.d changed half-way`,
    criteria: "each SIGHUP reloads metrics.d, polls in flight are committed, every sample central exactly once, " +
      "a clean stop afterwards",
  });
}
