/**
 * # The spool's disk fills up (store-forward.md (d) test 7)
 *
 * The real collector runs with its spool on a small loop-mounted ext4 filesystem (16 MB) while
 * the central PostgreSQL is down, polling a counting exporter every 100 ms. Each iteration fills
 * the filesystem to its last block from a competing process (fallocate, then dd until ENOSPC),
 * holds it full for a few seconds, then deletes the filler. After the last one PostgreSQL
 * starts and the backlog drains.
 *
 * Criteria: the collector never exits and keeps polling while the disk is full; it logs the
 * condition once when it starts and once when it ends (no warning or error repeated on every
 * poll or timer tick); it stores samples again by itself once space returns; and in the end
 * every sample the spool acknowledged is central exactly once, with a ledger tiling every seq:
 * the only values missing centrally are the samples the collector counted as lost (its
 * `Samples lost` events), so a loss is counted, never silent.
 */
import { type CollectorProcess, finalDrain, kwollector, sleep, within } from "../harness/collector.ts";
import type { CountingExporter } from "../peers/prometheus_exporter.ts";
import { checkDelivery, deliveryCounts } from "./delivery_check.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

const FS_BYTES = 16 * 1024 * 1024;
const PERIOD_MS = 100;
/** A message logged more often than this during one full-disk period is logged per poll or tick. */
const MAX_REPEATS = 2;

async function sh(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { ok: o.success, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

async function mustSh(cmd: string, args: string[]): Promise<string> {
  const r = await sh(cmd, args);
  if (!r.ok) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.out.trim()}`);
  return r.out;
}

/** Free bytes of the filesystem at `dir` (no block is reserved for root on it). */
async function freeBytes(dir: string): Promise<number> {
  const out = await mustSh("stat", ["-f", "-c", "%f %S", dir]);
  const [blocks, size] = out.trim().split(/\s+/).map(Number);
  return blocks! * size!;
}

/** Fills the filesystem at `dir` to its last block, as another process would. */
async function fill(dir: string): Promise<void> {
  let bytes = await freeBytes(dir);
  // fallocate takes the bulk at once; dd then takes what metadata rounding left.
  while (bytes > 0 && !(await sh("fallocate", ["-l", String(bytes), `${dir}/filler`])).ok) {
    bytes -= 64 * 1024;
  }
  await sh("dd", ["if=/dev/zero", `of=${dir}/filler2`, "bs=4096"]);
}

async function unfill(dir: string): Promise<void> {
  await Deno.remove(`${dir}/filler`).catch(() => {});
  await Deno.remove(`${dir}/filler2`).catch(() => {});
}

/** Level word and message (the text before the first `key=value` field) of a log line. */
function parseLine(line: string): { level: string; message: string } {
  const space = line.indexOf(" ");
  const rest = line.slice(space + 1);
  const field = rest.search(/ [a-z_]+=/);
  return { level: line.slice(0, space), message: field < 0 ? rest : rest.slice(0, field) };
}

/** Samples of the polled exporter the collector counted as lost (its `Samples lost` events). */
function countedLost(lines: string[]): number {
  let n = 0;
  for (const l of lines) {
    if (!l.includes("Samples lost: the spool could not store them") || !l.includes(" group=")) continue;
    n += Number(l.match(/ samples=(\d+)/)?.[1] ?? 0);
  }
  return n;
}

interface Cycle {
  servedWhileFull: number;
  lostLogged: boolean;
  recoveredLogged: boolean;
  /** Warning and error messages logged during the full period, with their count. */
  logged: Map<string, number>;
}

async function fullDiskCycle(
  collector: CollectorProcess,
  exporter: CountingExporter,
  mnt: string,
  holdMs: number,
): Promise<Cycle> {
  const from = collector.logs().length;
  const servedBefore = exporter.served();
  await fill(mnt);
  await sleep(holdMs);
  const servedWhileFull = exporter.served() - servedBefore;
  await unfill(mnt);
  // Long enough for the next group commit to succeed and end the condition.
  await sleep(2000);
  const lines = collector.logs().slice(from);
  const perMessage = new Map<string, number>();
  for (const l of lines) {
    const { level, message } = parseLine(l);
    if (level === "ERROR" || level === "WARNING" || level === "CRITICAL") {
      perMessage.set(`${level} ${message}`, (perMessage.get(`${level} ${message}`) ?? 0) + 1);
    }
  }
  return {
    servedWhileFull,
    lostLogged: lines.some((l) => l.startsWith("ERROR") && l.includes("Samples lost")),
    recoveredLogged: lines.some((l) => l.includes("Spool stores samples again")),
    logged: perMessage,
  };
}

export async function runDiskFull(size: ScenarioSize): Promise<ScenarioResult> {
  const started = performance.now();
  const notes: string[] = [];
  const failures: string[] = [];
  const counts: Record<string, number | string> = { cycles: size.iterations };
  const root = await Deno.makeTempDir({ prefix: "kwollector-diskfull-" });
  const mnt = `${root}/mnt`;
  try {
    // The run closes what it got (the collector first, the mount last) before the root goes.
    await using run = new TortureRun(size);
    const rand = run.random;
    await Deno.mkdir(mnt);
    await Deno.writeFile(`${root}/fs.img`, new Uint8Array(0));
    await Deno.truncate(`${root}/fs.img`, FS_BYTES);
    // No blocks reserved for root: the collector runs as root here and would use them.
    await mustSh("mkfs.ext4", ["-q", "-m", "0", `${root}/fs.img`]);
    await mustSh("mount", ["-o", "loop", `${root}/fs.img`, mnt]);
    run.own(mnt, async () => {
      const u = await sh("umount", [mnt]);
      if (!u.ok) {
        notes.push(`umount failed (${u.out.trim()}); lazily detached`);
        await sh("umount", ["-l", mnt]);
      }
    });
    counts.fs_bytes = FS_BYTES;

    const pg = await run.central();
    const exporter = run.exporter();
    const spoolPath = `${mnt}/spool/spool.db`;
    const rig = await run.rig({
      pg,
      exporter,
      periodMs: PERIOD_MS,
      settings: { spool_path: spoolPath, log_level: "debug" },
    });
    await pg.stop();
    const collector: CollectorProcess = run.collector(rig.config);
    await sleep(2000);

    let servedWhileFull = 0;
    const loggedWhileFull = new Map<string, number>();
    for (let i = 0; i < size.iterations; i++) {
      const holdMs = 2000 + Math.floor(rand() * 2000);
      const cycle = await fullDiskCycle(collector, exporter, mnt, holdMs);
      servedWhileFull += cycle.servedWhileFull;
      const exited = await within(collector.status, 0);
      if (exited) {
        failures.push(`cycle ${i}: the collector exited (${exited.code}/${exited.signal}) with the disk full`);
        break;
      }
      if (cycle.servedWhileFull < (holdMs / PERIOD_MS) / 2) {
        failures.push(`cycle ${i}: only ${cycle.servedWhileFull} polls in ${holdMs} ms with the disk full`);
      }
      if (!cycle.lostLogged) failures.push(`cycle ${i}: no error says samples are being lost`);
      if (!cycle.recoveredLogged) failures.push(`cycle ${i}: no log line says the spool stores samples again`);
      for (const [message, n] of cycle.logged) {
        loggedWhileFull.set(message, (loggedWhileFull.get(message) ?? 0) + n);
        if (n > MAX_REPEATS) failures.push(`cycle ${i}: '${message}' logged ${n} times in one full-disk period`);
      }
    }
    counts.polls_while_full = servedWhileFull;
    counts.logged_while_full = [...loggedWhileFull].map(([m, n]) => `${m} x${n}`).join("; ");

    await pg.start();
    // The running collector drains its backlog itself once the central database is back.
    const deadline = Date.now() + 60_000;
    let left = -1;
    while (Date.now() < deadline) {
      const status = await kwollector(["status", rig.config, "--json"]);
      left = status.code === 0 ? Number(JSON.parse(status.stdout).spool_rows) : -1;
      if (left === 0) break;
      await sleep(500);
    }
    counts.spool_rows_left_before_stop = left;
    const logs = collector.logs();
    failures.push(...await finalDrain(collector, rig.config));
    const check = await checkDelivery(pg, spoolPath, exporter);
    Object.assign(counts, deliveryCounts(check));
    const lost = countedLost(logs);
    const pollsFailed = logs.filter((l) => /Poll failed|Device poll failing/.test(l)).length;
    counts.samples_counted_lost = lost;
    counts.polls_failed = pollsFailed;
    counts.values_missing_centrally = check.missingValues.length;
    failures.push(...check.problems);
    if (check.missingValues.length > lost + pollsFailed) {
      failures.push(
        `${check.missingValues.length} served values are not central, the collector counted ${lost} lost ` +
          `(and ${pollsFailed} failed polls): a silent loss`,
      );
    }
    if (lost > check.missingValues.length) {
      failures.push(`the collector counted ${lost} samples lost, ${check.missingValues.length} are missing`);
    }
    if (lost === 0) notes.push("No sample was lost: the spool never ran out of space during a full period");
  } catch (err) {
    failures.push(`the scenario could not run: ${err instanceof Error ? err.message : err}`);
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
  return {
    name: "disk full",
    fault: "The spool's 16 MB filesystem filled to its last block by another process, held full for 2-4 s, " +
      "then freed, while the central database is down",
    criteria: "No crash, polling goes on, the condition is logged once when it starts and once when it ends, " +
      "writes resume by themselves, and every acknowledged sample is central exactly once: missing values are " +
      "exactly the samples counted as lost",
    passed: failures.length === 0,
    counts: { ...counts, ...(failures.length ? { first_failure: failures[0]! } : {}) },
    durationMs: Math.round(performance.now() - started),
    notes: [...notes, ...failures.slice(1, 8)],
  };
}
