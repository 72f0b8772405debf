/**
 * Kill sweep (reference/store-forward.md (d), test 1): the real collector process is killed with
 * SIGKILL at aimed points, restarted after each kill, and drained cleanly at the end. Every sample
 * the spool committed must then be in the central table exactly once, and the ledger must tile
 * every seq the spool ever gave.
 *
 * Kill points, each aimed, then checked for whether the aim was reached:
 * - `startup`: a random moment in the first 1.2 s (spool open and quick_check, reconciliation,
 *   first polls).
 * - `poll`: the exporter holds its answers 40 ms; the kill lands while a request is in flight.
 * - `spool-commit`: strace kills the collector at its n-th pwrite64 into the spool's WAL. Valid
 *   frames after the WAL's last commit frame prove that a transaction was cut (see sqlite_wal.ts).
 * - `wal-fsync`: strace kills at the n-th fsync/fdatasync of the WAL: a commit written, not synced.
 * - `checkpoint`: strace kills at the n-th write into the spool's main file, which in WAL mode only
 *   a checkpoint writes: an automatic one, or else the one at close after SIGTERM.
 * - `copy`: another session holds the metrics table in ACCESS EXCLUSIVE mode; the kill lands while
 *   pg_stat_activity shows the forwarder writing a batch's rows, blocked by the lock or running
 *   after it: its COPY, or the INSERT of a small batch sent in one statement (batch_writer.ts).
 * - `after-commit`: KWOLLECTOR_FAILPOINT=after-central-commit@n, between the central COMMIT and the
 *   local delete.
 * - `random`: a uniformly random moment 0.2 to 3 s after the start.
 * Spool garbage collection runs once a minute; no process here lives that long, so it is not one
 * of the kill points.
 */
import type { Sql } from "../../src/central/connect.ts";
import { type CollectorProcess, finalDrain, sleep, within } from "../harness/collector.ts";
import type { CountingExporter } from "../peers/prometheus_exporter.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { spoolSalvaged, unexpectedLogLines } from "./lives.ts";
import type { Rig } from "./rig.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";
import { readWal } from "./sqlite_wal.ts";

export const KILL_PHASES = [
  "startup",
  "poll",
  "spool-commit",
  "wal-fsync",
  "checkpoint",
  "copy",
  "after-commit",
  "random",
] as const;
export type KillPhase = typeof KILL_PHASES[number];

interface Context {
  run: TortureRun;
  admin: Sql;
  exporter: CountingExporter;
  rig: Rig;
}

interface Round {
  phase: KillPhase;
  /** The aimed point was reached (see each phase). */
  hit: boolean;
  /** Which variant was used, when a phase has several. */
  variant?: string;
  logs: string[];
}

/** Waits for the injected kill; past `timeoutMs` the collector is killed from here instead. */
async function killedWithin(c: CollectorProcess, timeoutMs: number): Promise<boolean> {
  const exited = await within(c.status, timeoutMs);
  if (!exited) {
    await c.stop("SIGKILL");
    return false;
  }
  return (await c.status).signal === "SIGKILL";
}

/** strace arguments that SIGKILL the traced collector at its n-th `syscalls` call on `path`. */
function straceKill(path: string, syscalls: string, nth: number): string[] {
  // --seccomp-bpf would be cheaper, but with it strace 6.1 does not count calls for `when`.
  return [
    "strace",
    "-f",
    "-qq",
    "-o",
    "/dev/null",
    "-P",
    path,
    "-e",
    `trace=${syscalls}`,
    "-e",
    `inject=${syscalls}:signal=KILL:when=${nth}`,
    "--",
  ];
}

async function waitForCopy(admin: Sql, want: "blocked" | "running", timeoutMs: number): Promise<boolean> {
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    const rows = await admin<{ waiting: string | null }[]>`
      SELECT wait_event_type AS waiting FROM pg_stat_activity
      WHERE application_name = 'kwollector forwarder' AND state = 'active'
        AND query ~* '^\\s*(copy|insert into metrics)'`;
    if (rows.some((r) => (want === "blocked") === (r.waiting === "Lock"))) return true;
    await sleep(2);
  }
  return false;
}

async function killRound(ctx: Context, phase: KillPhase): Promise<Round> {
  const { run, rig, exporter } = ctx;
  const { random } = run;
  switch (phase) {
    case "startup": {
      const c = run.collector(rig.config);
      await sleep(30 + random() * 1200);
      await c.stop("SIGKILL");
      return { phase, hit: true, logs: c.logs() };
    }
    case "poll": {
      exporter.setDelay(40);
      try {
        const c = run.collector(rig.config);
        const arrived = await within(
          Promise.race([exporter.nextRequest().then(() => true), c.status.then(() => false)]),
          15_000,
        ) ?? false;
        if (arrived) await sleep(random() * 30);
        const hit = arrived && exporter.inFlight() > 0;
        await c.stop("SIGKILL");
        return { phase, hit, logs: c.logs() };
      } finally {
        exporter.setDelay(0);
      }
    }
    case "spool-commit": {
      const nth = 3 + Math.floor(random() * 150);
      const c = run.collector(rig.config, { wrapper: straceKill(`${rig.spoolPath}-wal`, "pwrite64", nth) });
      return { phase, hit: await killedWithin(c, 20_000), logs: c.logs() };
    }
    case "wal-fsync": {
      const nth = 1 + Math.floor(random() * 40);
      const c = run.collector(rig.config, { wrapper: straceKill(`${rig.spoolPath}-wal`, "fsync,fdatasync", nth) });
      return { phase, hit: await killedWithin(c, 20_000), logs: c.logs() };
    }
    case "checkpoint": {
      const nth = 1 + Math.floor(random() * 6);
      // SQLite checkpoints by itself once the WAL holds 1000 frames; killed processes leave their
      // frames behind, so the WAL grows from round to round. Near the mark, wait for it.
      const frames = await walFrames(`${rig.spoolPath}-wal`);
      const c = run.collector(rig.config, { wrapper: straceKill(rig.spoolPath, "pwrite64", nth) });
      const auto = await within(c.status, frames >= AUTO_CHECKPOINT_FRAMES * 0.7 ? 8000 : 1000 + random() * 3000);
      if (auto) return { phase, hit: (await c.status).signal === "SIGKILL", variant: "automatic", logs: c.logs() };
      // No automatic checkpoint yet: a clean stop checkpoints when it closes the spool.
      Deno.kill(await c.pid(), "SIGTERM");
      return { phase, hit: await killedWithin(c, 15_000), variant: "at close", logs: c.logs() };
    }
    case "copy": {
      const lock = await ctx.admin.reserve();
      try {
        await lock`BEGIN`;
        await lock`LOCK TABLE metrics IN ACCESS EXCLUSIVE MODE`;
        const c = run.collector(rig.config);
        const blocked = await waitForCopy(ctx.admin, "blocked", 15_000);
        if (random() < 0.5) {
          if (blocked) await sleep(random() * 500);
          await c.stop("SIGKILL");
          await lock`COMMIT`;
          return { phase, hit: blocked, variant: "blocked by a lock", logs: c.logs() };
        }
        await sleep(200 + random() * 1300);
        await lock`COMMIT`;
        const running = await waitForCopy(ctx.admin, "running", 3000);
        await c.stop("SIGKILL");
        return { phase, hit: running, variant: "running", logs: c.logs() };
      } finally {
        await lock`ROLLBACK`.catch(() => {});
        lock.release();
      }
    }
    case "after-commit": {
      const nth = 1 + Math.floor(random() * 4);
      const c = run.collector(rig.config, { env: { KWOLLECTOR_FAILPOINT: `after-central-commit@${nth}` } });
      return { phase, hit: await killedWithin(c, 15_000), logs: c.logs() };
    }
    case "random": {
      const c = run.collector(rig.config);
      await sleep(200 + random() * 2800);
      await c.stop("SIGKILL");
      return { phase, hit: true, logs: c.logs() };
    }
  }
}

/** SQLite's default wal_autocheckpoint, which the spool keeps. */
const AUTO_CHECKPOINT_FRAMES = 1000;

async function walFrames(path: string): Promise<number> {
  try {
    return readWal(await Deno.readFile(path)).frames;
  } catch {
    return 0; // no WAL: the spool was closed cleanly
  }
}

/** Every phase the same number of times (± 1), in a seeded random order. */
function schedule(kills: number, phases: readonly KillPhase[], random: () => number): KillPhase[] {
  const order = Array.from({ length: kills }, (_, i) => phases[i % phases.length]!);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** `phases` narrows the sweep to some kill points (to replay one). */
export async function runKillSweep(
  size: ScenarioSize,
  phases: readonly KillPhase[] = KILL_PHASES,
): Promise<ScenarioResult> {
  await using run = new TortureRun(size);
  const { random, problems, notes, counts } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: 20 });
  const admin = run.own(pg.admin("kwdb"), (admin) => admin.end({ timeout: 1 }).catch(() => {}));
  const rig = await run.rig({ pg, exporter, settings: { forward_batch_rows: 500 } });
  const ctx: Context = { run, admin, exporter, rig };
  const rounds: Round[] = [];
  let midTransaction = 0;
  let roundsPolled = 0;
  let reconciliations = 0;
  const unexpected: string[] = [];
  for (const phase of schedule(size.iterations, phases, random)) {
    const servedBefore = exporter.served();
    const round = await killRound(ctx, phase);
    rounds.push(round);
    reconciliations += round.logs.filter((l) => /Reconciled spool/.test(l)).length;
    if (spoolSalvaged(round.logs)) problems.push(`round ${rounds.length} (${phase}) found the spool damaged`);
    unexpected.push(...unexpectedLogLines(round.logs));
    if (exporter.served() > servedBefore) roundsPolled++;
    // A cut transaction shows as valid frames after the WAL's last commit frame.
    const wal = await Deno.readFile(`${rig.spoolPath}-wal`).catch(() => new Uint8Array());
    if (readWal(wal).uncommittedFrames > 0) {
      midTransaction++;
      counts[`cutTransactions.${phase}`] = Number(counts[`cutTransactions.${phase}`] ?? 0) + 1;
    }
  }
  // A clean run: it must reconcile, poll and forward as if nothing had happened.
  const last = run.collector(rig.config);
  const servedBefore = exporter.served();
  for (let i = 0; i < 100 && exporter.served() < servedBefore + 15; i++) await sleep(100);
  const finalPolls = exporter.served() - servedBefore;
  problems.push(...await finalDrain(last, rig.config));
  for (const line of last.logs()) if (/Reconciled spool/.test(line)) reconciliations++;
  unexpected.push(...unexpectedLogLines(last.logs()));
  if (finalPolls < 5) problems.push(`the collector polled ${finalPolls} times in its last, clean run`);

  const check = await run.checkDelivery(pg, rig.spoolPath, exporter);
  Object.assign(counts, { kills: rounds.length, ...deliveryCounts(check) });
  for (const phase of phases) {
    const of = rounds.filter((r) => r.phase === phase);
    counts[`kills.${phase}`] = of.length;
    counts[`aimed.${phase}`] = of.filter((r) => r.hit).length;
    if (of.length > 0 && !of.some((r) => r.hit)) problems.push(`no kill reached its aimed point in phase ${phase}`);
  }
  for (const r of rounds.filter((r) => r.variant && r.hit)) {
    counts[`aimed.${r.phase}.${r.variant}`] = Number(counts[`aimed.${r.phase}.${r.variant}`] ?? 0) + 1;
  }
  counts.cutTransactions = midTransaction;
  counts.roundsThatPolled = roundsPolled;
  counts.reconciliations = reconciliations;
  counts.finalPolls = finalPolls;
  counts.neverSpooledRunMax = Math.max(0, ...holeSizes(check.missingValues));
  if (unexpected.length) notes.push(`Unexpected log lines: ${unexpected.slice(0, 5).join(" | ")}`);
  notes.push(
    "Samples polled but not yet committed when a kill lands are not acknowledged and not counted as lost " +
      "(neverSpooled); every committed one is checked.",
  );
  return run.result({
    name: "kill -9 sweep",
    fault: "SIGKILL of the collector process at aimed points (startup, mid-poll, mid-spool-commit, WAL fsync, " +
      "checkpoint, mid-COPY, between central COMMIT and local delete, random), restart after each",
    criteria: "every committed sample central exactly once, no ledger gap, polling resumes after every restart",
  });
}

/** Lengths of the runs of consecutive missing values. */
function holeSizes(missing: number[]): number[] {
  const sizes: number[] = [];
  let run = 0;
  for (let i = 0; i < missing.length; i++) {
    run = i > 0 && missing[i] === missing[i - 1]! + 1 ? run + 1 : 1;
    if (i === missing.length - 1 || missing[i + 1] !== missing[i]! + 1) sizes.push(run);
  }
  return sizes;
}
