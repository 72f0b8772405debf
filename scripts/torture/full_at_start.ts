/**
 * A full disk at start (issue: a healthy spool was moved aside as "damaged" and its backlog never
 * sent). The spool lives on a small tmpfs. Each iteration: the collector runs while PostgreSQL is
 * down (a backlog builds), stops cleanly (no -wal, no -shm: the state after `systemctl stop`),
 * the filesystem is filled, and the collector is started again: it must say once, with the path,
 * that the disk refuses, leave the file where it is, poll nothing it could not keep, and open
 * the same spool (same id) as soon as space returns. PostgreSQL then returns and every sample
 * committed to the spool must arrive exactly once.
 */
import { type CollectorProcess, finalDrain, sleep } from "../harness/collector.ts";
import { mountSmallFs } from "../peers/small_fs.ts";
import { listAside } from "../../src/spool/aside.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { type Life, pollFailed } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

async function waitForLine(c: CollectorProcess, pattern: RegExp, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    if (c.logs().some((l) => pattern.test(l))) return true;
    await sleep(50);
  }
  return false;
}

export async function runFullAtStart(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { cycles: size.iterations });
  const { problems } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: 5 });
  const fs = run.own(await mountSmallFs(16 * 1024 * 1024), (fs) => fs.close());
  const rig = await run.rig({
    pg,
    exporter,
    settings: { spool_path: `${fs.dir}/spool.db`, telemetry_interval_ms: 0 },
  });
  await pg.stop();
  const lives: Life[] = [];
  let spoolId: string | undefined;
  let refusedLogged = 0;
  let servedWhileFull = 0;
  let collector = run.collector(rig.config);
  let first = 1;
  for (let i = 0; i < size.iterations; i++) {
    await sleep(1500);
    const stop = await collector.stop("SIGTERM");
    if (stop.code !== 0) problems.push(`cycle ${i}: SIGTERM gave exit ${stop.code}`);
    lives.push({ first, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(collector.logs()) });
    const id = /spool_id="([0-9a-f-]+)"/.exec(collector.logs().join("\n"))?.[1];
    if (spoolId !== undefined && id !== spoolId) problems.push(`cycle ${i}: the spool id changed to ${id}`);
    spoolId ??= id;
    fs.fill();
    const beforeFull = exporter.served();
    collector = run.collector(rig.config);
    if (!await waitForLine(collector, /Spool cannot be opened: the disk or the operating system refuses/, 10_000)) {
      problems.push(`cycle ${i}: no log line said the disk refused (${collector.logs().slice(-2).join(" | ")})`);
    } else refusedLogged++;
    await sleep(1500);
    servedWhileFull += exporter.served() - beforeFull;
    const aside = listAside(`${fs.dir}/spool.db`);
    if (aside.damaged.length + aside.retired.length > 0) problems.push(`cycle ${i}: the sound spool was moved aside`);
    fs.free();
    if (!await waitForLine(collector, /Spool opened/, 40_000)) problems.push(`cycle ${i}: the spool never opened`);
    first = exporter.served() + 1;
  }
  await sleep(1000);
  await pg.start();
  const last = collector;
  await sleep(2000);
  problems.push(...await finalDrain(last, rig.config));
  lives.push({ first, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(last.logs()) });
  const check = await run.checkDelivery(pg, `${fs.dir}/spool.db`, exporter, {
    lives,
    problem: "served values missing",
  });
  if (servedWhileFull > 0) problems.push(`${servedWhileFull} polls were taken while the spool could not keep them`);
  Object.assign(run.counts, { refusalsLogged: refusedLogged, ...deliveryCounts(check) });
  return run.result({
    name: "full disk at start",
    fault: `the spool's filesystem full when the collector starts, ${size.iterations} times, PostgreSQL down`,
    criteria: "the refusal logged with the path, the spool never moved aside, the same spool opened once space " +
      "returns, every committed sample central exactly once",
  });
}
