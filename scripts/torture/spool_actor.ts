/**
 * A real Spool in a process of its own, for the model-based property test (spool_model.ts). It
 * reads one JSON command per line on stdin and answers one JSON line per command on stdout, so
 * the test can SIGKILL it at any moment, in the middle of a command or between two: a real crash
 * of the process that owns the spool, followed by a real reopen through `openSpool`.
 *
 * Usage: deno run -A spool_actor.ts PATH POLICY MAX_BYTES COMMIT_INTERVAL_MS
 */
import { DatabaseSync } from "node:sqlite";
import { type FullPolicy, openSpool, openSpoolView, type Spool, type SpooledSample } from "../../src/spool/spool.ts";
import type { Labels, Sample } from "../../src/sample.ts";
import { errorMessage, setLogLevel, setLogSink } from "../../src/log.ts";

/** A sample on the wire: JSON cannot carry NaN, ±Infinity or -0, so values travel as text then. */
export interface WireSample {
  seq?: number;
  t: number;
  d: string;
  m: string;
  v: number | string;
  l: Labels;
}

export type Command =
  | { op: "append"; groups: WireSample[][]; commit: "now" | "timer" }
  | { op: "read"; after: number; limit: number }
  | { op: "remove"; first: number; last: number }
  | { op: "quarantine"; samples: WireSample[]; reason: string }
  | { op: "markReported"; seq: number }
  | { op: "removeGap"; first: number }
  | { op: "releaseLeases" }
  | { op: "gc" }
  | { op: "checkpoint" }
  | { op: "reopen" }
  | { op: "observe"; full: boolean }
  | { op: "exit" };

export interface AppendResult {
  usedBefore: number;
  usedAfter: number;
  droppedNewest: number;
  droppedOldest: number;
  rejected: string[];
}

export interface Observation {
  spoolId: string;
  lastSeq: number;
  nextSeq: number;
  rowCount: number;
  statsRows: number;
  readRows: number;
  digest: string;
  /** Every row in canonical form, only when asked (to explain a digest mismatch). */
  rows?: string[];
  minSeq: number | null;
  gaps: { firstSeq: number; lastSeq: number; rows: number; reason: string }[];
  unreported: { seq: number; reason: string }[];
  quarantined: number;
  usedBytes: number;
}

export interface Reply {
  ok: boolean;
  result?: unknown;
  error?: string;
  logs: string[];
}

export function encodeValue(v: number): number | string {
  if (Number.isNaN(v) || !Number.isFinite(v) || Object.is(v, -0)) return String(Object.is(v, -0) ? "-0" : v);
  return v;
}

export function decodeValue(v: number | string): number {
  if (typeof v === "number") return v;
  return v === "-0" ? -0 : Number(v);
}

export function toWire(s: Sample & { seq?: number }): WireSample {
  const w: WireSample = { t: s.timestampMs, d: s.deviceId, m: s.metricId, v: encodeValue(s.value), l: s.labels };
  if (s.seq !== undefined) w.seq = s.seq;
  return w;
}

export function fromWire(w: WireSample): Sample & { seq: number } {
  return { seq: w.seq ?? 0, timestampMs: w.t, deviceId: w.d, metricId: w.m, value: decodeValue(w.v), labels: w.l };
}

/** One line per sample, exactly as the model and the spool must agree on it (µs timestamps). */
export function canonical(seq: number, s: WireSample): string {
  return [seq, s.t.toFixed(3), JSON.stringify(s.d), JSON.stringify(s.m), JSON.stringify(s.v), JSON.stringify(s.l)]
    .join("\t");
}

export async function digestOf(lines: string[]): Promise<string> {
  const bytes = new TextEncoder().encode(lines.join("\n"));
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function main(): Promise<void> {
  const [path, policy, maxBytes, commitMs] = Deno.args;
  const logs: string[] = [];
  setLogSink((line) => logs.push(line));
  setLogLevel("info");
  const opts = {
    path: path!,
    maxBytes: Number(maxBytes),
    fullPolicy: policy as FullPolicy,
    synchronous: "full" as const,
    commitIntervalMs: Number(commitMs),
  };
  const out = (reply: Reply) => {
    const bytes = new TextEncoder().encode(JSON.stringify(reply) + "\n");
    for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
  };
  let spool: Spool;
  let reader: Reader;
  const openBoth = () => {
    spool = openSpool(opts);
    reader = openSpoolView(opts.path);
  };
  try {
    openBoth();
  } catch (err) {
    out({ ok: false, error: `Cannot open the spool: ${errorMessage(err)}`, logs: logs.splice(0) });
    return;
  }
  out({ ok: true, result: { spoolId: spool!.spoolId }, logs: logs.splice(0) });

  const run = async (cmd: Command): Promise<unknown> => {
    switch (cmd.op) {
      case "append": {
        const before = { ...spool.writer.counters };
        const usedBefore = spool.view.usedBytes();
        const pending = cmd.groups.map((g) => spool.writer.append(g.map(fromWire)));
        if (cmd.commit === "now") spool.writer.commitPending();
        const settled = await Promise.allSettled(pending);
        const result: AppendResult = {
          usedBefore,
          usedAfter: spool.view.usedBytes(),
          droppedNewest: spool.writer.counters.droppedNewest - before.droppedNewest,
          droppedOldest: spool.writer.counters.droppedOldest - before.droppedOldest,
          rejected: settled.flatMap((s) => s.status === "rejected" ? [errorMessage(s.reason)] : []),
        };
        return result;
      }
      case "read":
        return spool.lease.read(cmd.after, cmd.limit).map(toWire);
      case "remove":
        return spool.lease.removeForwarded(cmd.first, cmd.last);
      case "quarantine":
        spool.lease.quarantine(cmd.samples.map(fromWire) as SpooledSample[], cmd.reason);
        return null;
      case "markReported":
        spool.lease.markQuarantineReported(cmd.seq);
        return null;
      case "removeGap":
        spool.lease.removeGap(cmd.first);
        return null;
      case "releaseLeases":
        spool.lease.releaseLeases();
        return null;
      case "gc":
        return spool.writer.collectGarbage();
      case "checkpoint": {
        // SQLite's writeback of the WAL into the database file, forced from another connection.
        const db = new DatabaseSync(opts.path);
        try {
          db.exec("PRAGMA busy_timeout = 10000");
          return db.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get();
        } finally {
          db.close();
        }
      }
      case "reopen":
        reader.close();
        spool.close();
        openBoth();
        return { spoolId: spool.spoolId };
      case "observe":
        return await observe(spool, reader, cmd.full);
      case "exit":
        reader.close();
        spool.close();
        return null;
    }
  };

  let rest = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      const cmd = JSON.parse(line) as Command;
      try {
        const result = await run(cmd);
        out({ ok: true, result, logs: logs.splice(0) });
      } catch (err) {
        out({ ok: false, error: errorMessage(err), logs: logs.splice(0) });
      }
      if (cmd.op === "exit") return;
    }
  }
}

/** A second connection, read only, as `status` opens it. */
type Reader = ReturnType<typeof openSpoolView>;

async function observe(spool: Spool, reader: Reader, full: boolean): Promise<Observation> {
  // The reader is a second connection (as `status` uses): it sees what is committed, and its
  // reads do not lease anything in the writer.
  const rows: string[] = [];
  // read() returns one run of consecutive seqs at a time.
  for (let after = 0;;) {
    const run = reader.view.read(after, 10_000);
    if (run.length === 0) break;
    for (const s of run) rows.push(canonical(s.seq, toWire(s)));
    after = run.at(-1)!.seq;
  }
  const stats = spool.view.stats();
  const obs: Observation = {
    spoolId: spool.spoolId,
    lastSeq: spool.lease.lastSeq(),
    nextSeq: stats.nextSeq,
    rowCount: spool.lease.rowCount(),
    statsRows: stats.rows,
    readRows: rows.length,
    digest: await digestOf(rows),
    minSeq: spool.lease.minSeq() ?? null,
    gaps: spool.lease.gaps(),
    unreported: spool.lease.unreportedQuarantine(),
    quarantined: stats.quarantined,
    usedBytes: spool.view.usedBytes(),
  };
  if (full) obs.rows = rows;
  return obs;
}

if (import.meta.main) await main();
