/**
 * Clock steps (reference/store-forward.md (d), test 13): the collector's wall clock is stepped
 * back and forward by an hour while it runs, with libfaketime preloaded into the collector process
 * (Debian package `faketime`). FAKETIME_TIMESTAMP_FILE holds the offset and is re-read on every
 * call (FAKETIME_NO_CACHE); FAKETIME_DONT_FAKE_MONOTONIC keeps CLOCK_MONOTONIC real, so only the
 * wall clock steps, as an NTP step or an operator's `date -s` does. Deno's Date.now() reads
 * CLOCK_REALTIME through libc and follows the offset; its timers and performance.now() use
 * CLOCK_MONOTONIC and do not.
 *
 * Criteria: sample timestamps follow the stepped clock; polling keeps its period in monotonic
 * time (no second without a poll, no bunching); seqs keep the poll order across a backward step
 * (checked in the spool while PostgreSQL is stopped); every sample central exactly once, no ledger
 * gap; and the durations the collector logs (how long the outage lasted) are not skewed by the
 * step.
 */
import { DatabaseSync } from "node:sqlite";
import { finalDrain, sleep } from "../harness/collector.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { pollFailed, unexpectedLogLines } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

export const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const PERIOD_MS = 100;
const STEP_S = 3600;
const DWELL_MS = 2500;
/** Samples polled this close after a step may carry either offset. */
const STEP_AMBIGUITY_MS = 300;

interface Step {
  monoMs: number;
  offsetS: number;
}

/** -1 h, back to 0 (a forward step), +1 h, back to 0 (a backward step), and again. */
function offsetOf(step: number): number {
  return [-STEP_S, 0, STEP_S, 0][step % 4]!;
}

export async function runClockStep(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { steps: size.iterations });
  const { problems, notes, counts } = run;
  await Deno.stat(LIBFAKETIME).catch(() => {
    throw new Error(`libfaketime is missing (${LIBFAKETIME}): install the Debian package 'faketime'`);
  });
  const pg = await run.central();
  const exporter = run.exporter({ series: 5 });
  // The test server's certificate was issued seconds ago: with the clock an hour behind,
  // verify-full refuses it (not yet valid) and forwarding waits for the clock. Real
  // certificates are issued long before; here the connection is encrypted, not verified.
  const rig = await run.rig({ pg, exporter, periodMs: PERIOD_MS, sslmode: "require" });
  const offsetFile = `${rig.dir}/faketime-offset`;
  const steps: Step[] = [];
  const setOffset = async (offsetS: number) => {
    await Deno.writeTextFile(offsetFile, `${offsetS >= 0 ? "+" : ""}${offsetS}\n`);
    steps.push({ monoMs: performance.now(), offsetS });
  };
  await setOffset(0);
  const collector = run.collector(rig.config, {
    env: {
      LD_PRELOAD: LIBFAKETIME,
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_NO_CACHE: "1",
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
    },
  });
  while (exporter.served() < 10) await sleep(50);
  const firstMeasured = exporter.served() + 1;
  await sleep(DWELL_MS);

  // PostgreSQL goes down before the first backward step and comes back after it: the spool
  // then holds samples from both sides of the step, and the outage starts at one offset and
  // ends at another.
  await pg.stop();
  const outageStart = performance.now();
  await sleep(500);
  await setOffset(offsetOf(0));
  await sleep(DWELL_MS);
  const seqOrder = spoolOrder(rig.spoolPath);
  await pg.start();
  const logs = collector.logs();
  while (!logs.some((l) => /Central database reachable again/.test(l)) && performance.now() - outageStart < 30_000) {
    await sleep(20);
  }
  counts.outageMs = Math.round(performance.now() - outageStart);
  await sleep(DWELL_MS);
  for (let i = 1; i < size.iterations; i++) {
    await setOffset(offsetOf(i));
    await sleep(DWELL_MS);
  }
  await setOffset(0);
  await sleep(DWELL_MS);
  const lastMeasured = exporter.served();
  problems.push(...await finalDrain(collector, rig.config));

  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, {
    lives: [{ first: 1, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(logs) }],
    problem: "polls never spooled",
  });

  // Timestamps follow the offset in force when the poll was sent.
  let compared = 0;
  let wrongTimestamps = 0;
  let worstErrorMs = 0;
  const followed = new Set<number>();
  for (let v = firstMeasured; v <= lastMeasured; v++) {
    const at = exporter.servedAt(v);
    const ts = check.central.get(v);
    if (!at || ts === undefined) continue;
    const stepIndex = steps.findLastIndex((s) => s.monoMs <= at.monoMs);
    const step = steps[stepIndex];
    if (!step || at.monoMs - step.monoMs < STEP_AMBIGUITY_MS) continue;
    compared++;
    const error = Math.abs(ts - (at.wallMs + step.offsetS * 1000));
    worstErrorMs = Math.max(worstErrorMs, error);
    if (error > 1000) wrongTimestamps++;
    else followed.add(step.offsetS);
  }
  if (wrongTimestamps > 0) problems.push(`${wrongTimestamps} of ${compared} timestamps do not follow the clock`);
  for (const offset of new Set(steps.map((s) => s.offsetS))) {
    if (!followed.has(offset)) problems.push(`no sample was stamped with the clock offset ${offset} s`);
  }

  // Polling in monotonic time: samples per second of this process' monotonic clock.
  const perSecond = pollsPerSecond(exporter, firstMeasured, lastMeasured);
  const nominal = 1000 / PERIOD_MS;
  const fewest = Math.min(...perSecond);
  const most = Math.max(...perSecond);
  if (fewest < 1) problems.push("a second went by without a poll");
  if (most > nominal * 2) problems.push(`${most} polls in one second, nominal ${nominal}: polls bunched`);

  if (seqOrder.outOfOrder > 0) problems.push(`${seqOrder.outOfOrder} spooled polls out of seq order`);
  if (seqOrder.timestampSteps === 0) {
    problems.push("the spool holds no backward timestamp step although the clock was stepped back");
  }

  // Durations the collector logs must be measured on the monotonic clock.
  const lasted = logs.map((l) => /Central database reachable again.*lasted_s=(-?\d+)/.exec(l)?.[1])
    .filter((s): s is string => s !== undefined).map(Number);
  const outageS = Number(counts.outageMs ?? 0) / 1000;
  if (lasted.length === 0) problems.push("the collector never logged the end of the outage");
  else if (lasted.some((s) => Math.abs(s - outageS) > 3)) {
    problems.push(`the collector logged an outage of ${lasted.join(", ")} s; it lasted ${outageS.toFixed(1)} s`);
  }
  // Every step is reported (a warning with its size), none invented.
  const reported = logs.filter((l) => l.includes("Wall clock stepped")).length;
  const made = steps.filter((s, i) => i > 0 && s.offsetS !== steps[i - 1]!.offsetS).length;
  if (reported !== made) problems.push(`${reported} clock steps logged, ${made} made`);
  const unexpected = unexpectedLogLines(logs);
  if (unexpected.length) notes.push(`Unexpected log lines: ${unexpected.slice(0, 5).join(" | ")}`);
  Object.assign(counts, {
    ...deliveryCounts(check),
    timestampsCompared: compared,
    wrongTimestamps,
    worstTimestampErrorMs: Math.round(worstErrorMs),
    pollsPerSecondMin: fewest,
    pollsPerSecondMax: most,
    spooledAcrossStep: seqOrder.samples,
    spoolTimestampStepsBack: seqOrder.timestampSteps,
    loggedOutageS: lasted.join(","),
    clockStepsReported: reported,
  });
  notes.push(
    "libfaketime (LD_PRELOAD, FAKETIME_DONT_FAKE_MONOTONIC=1) steps the collector's wall clock only.",
    "db_sslmode require: with verify-full, a certificate issued less than an hour ago is refused while the " +
      "clock is an hour behind (forwarding then waits, samples stay in the spool).",
  );
  return run.result({
    name: "wall clock steps",
    fault: `the collector's wall clock stepped by ±${STEP_S / 3600} h ${size.iterations} times (libfaketime), ` +
      "PostgreSQL down across the first backward step",
    criteria: "timestamps follow the clock, polling keeps its monotonic period, seqs keep poll order, every sample " +
      "central exactly once, no ledger gap, logged durations unskewed",
  });
}

/**
 * The spool's scrape_count samples in seq order: their values (poll order) must increase with
 * seq, whatever their timestamps do; `timestampSteps` counts timestamps lower than their
 * predecessor's (the backward step, seen in the spool).
 */
function spoolOrder(spoolPath: string): { samples: number; outOfOrder: number; timestampSteps: number } {
  const db = new DatabaseSync(spoolPath, { readOnly: true });
  try {
    const rows = db.prepare(
      `SELECT s.value, s.ts FROM samples s JOIN series r ON r.id = s.series
       WHERE r.metric_id = 'prom_scrape_count' ORDER BY s.seq`,
    ).all() as { value: number; ts: number }[];
    let outOfOrder = 0;
    let timestampSteps = 0;
    for (let i = 1; i < rows.length; i++) {
      if (rows[i]!.value <= rows[i - 1]!.value) outOfOrder++;
      if (rows[i]!.ts < rows[i - 1]!.ts) timestampSteps++;
    }
    return { samples: rows.length, outOfOrder, timestampSteps };
  } finally {
    db.close();
  }
}

function pollsPerSecond(exporter: { servedAt(v: number): { monoMs: number } | undefined }, from: number, to: number) {
  const t0 = exporter.servedAt(from)?.monoMs ?? 0;
  const bins: number[] = [];
  for (let v = from; v <= to; v++) {
    const at = exporter.servedAt(v);
    if (at) {
      const bin = Math.floor((at.monoMs - t0) / 1000);
      bins[bin] = (bins[bin] ?? 0) + 1;
    }
  }
  // The last second is partial.
  return Array.from({ length: Math.max(1, bins.length - 1) }, (_, i) => bins[i] ?? 0);
}
