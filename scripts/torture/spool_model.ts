/**
 * # Model-based property test of the spool (store-forward.md (d) test 15, after Vector's)
 *
 * A real Spool runs in a child process (spool_actor.ts). Each seed drives it through a random
 * interleaving of what the collector does to it: group commits of varied batches (0, 1, the
 * 64-row INSERT boundaries, thousands), forwarder lane reads (`read(0, n)` for the backfill or
 * single lane, `read(liveAfter, n)` for the live lane, one outstanding batch per lane), central
 * acknowledgements (`removeForwarded`), bisected batches with a poison sample (`quarantine` then
 * `markQuarantineReported`), failed sends (`releaseLeases`), gap reports (`removeGap`),
 * reconciliation with the central ledger, garbage collection, WAL checkpoints, close + reopen,
 * and crashes: SIGKILL of the child while it is idle or at a random instant inside one of those
 * operations, then a reopen through `openSpool` in a new process.
 *
 * An in-memory model says exactly what must be readable after each step: every acknowledged
 * append survives (an operation cut by a crash is atomic: the state is the one before or the
 * one after it), seqs are consecutive and never reused, the spool id never changes, a range the
 * full-spool policy gave up is recorded as a gap covering exactly the rows that went and never a
 * leased one, and `read()` of each lane returns exactly the predicted rows. The model also plays
 * the central ledger as the forwarder does (claims that never overlap), so after a final drain
 * the ledger must tile 1..lastSeq with no hole and no overlap. Every step is compared with
 * the spool through a second read-only connection, after every step.
 */
import {
  type AppendResult,
  canonical,
  type Command,
  digestOf,
  encodeValue,
  type Observation,
  type Reply,
  type WireSample,
} from "./spool_actor.ts";
import { prng, type ScenarioResult, type ScenarioSize } from "./scenario.ts";
import { LineChild } from "./lines.ts";

const ACTOR = new URL("./spool_actor.ts", import.meta.url).pathname;
const STEPS_PER_SEED = 90;
const REPLY_TIMEOUT_MS = 60_000;
/** Generous upper bound of the bytes one sample takes in the spool (about 30 measured). */
const SAMPLE_BYTES_BOUND = 64;
const PAGE = 4096;
const ROOMY_BYTES = 64 * 1024 * 1024;
const POISON_REASON = 'new row for relation "metrics" violates check constraint (model poison)';

interface Gap {
  firstSeq: number;
  lastSeq: number;
  rows: number;
}

interface LedgerRange {
  first: number;
  last: number;
  kind: "data" | "quarantined" | "dropped";
}

/** What the spool must hold (everything but `leased` is durable) plus the central ledger. */
interface ModelState {
  spoolId: string;
  nextSeq: number;
  /** seq → canonical line; Map order is seq order since seqs only grow. */
  rows: Map<number, string>;
  gaps: Gap[];
  quarantine: Map<number, { reason: string; reported: boolean }>;
  /** Rows handed out by read() and not yet removed (forgotten on releaseLeases and restarts). */
  leased: Set<number>;
  ledger: LedgerRange[];
}

interface Batch {
  samples: WireSample[];
  first: number;
  last: number;
}

class Failure extends Error {}

interface SeedCounts {
  steps: number;
  appends: number;
  samplesOffered: number;
  samplesAcked: number;
  droppedNewest: number;
  dropOldestEvents: number;
  droppedOldest: number;
  reads: number;
  forwarded: number;
  quarantined: number;
  reconciled: number;
  checkpoints: number;
  gc: number;
  reopens: number;
  crashesIdle: number;
  crashesMidOp: number;
  inDoubtAfter: number;
  inDoubtBefore: number;
  crashesAfterCentralCommit: number;
  /** Crashes after the process had written its answer: the operation must have taken effect. */
  answeredBeforeCrash: number;
}

function emptyCounts(): SeedCounts {
  return {
    steps: 0,
    appends: 0,
    samplesOffered: 0,
    samplesAcked: 0,
    droppedNewest: 0,
    dropOldestEvents: 0,
    droppedOldest: 0,
    reads: 0,
    forwarded: 0,
    quarantined: 0,
    reconciled: 0,
    checkpoints: 0,
    gc: 0,
    reopens: 0,
    crashesIdle: 0,
    crashesMidOp: 0,
    inDoubtAfter: 0,
    inDoubtBefore: 0,
    answeredBeforeCrash: 0,
    crashesAfterCentralCommit: 0,
  };
}

function clone(m: ModelState): ModelState {
  return {
    spoolId: m.spoolId,
    nextSeq: m.nextSeq,
    rows: new Map(m.rows),
    gaps: m.gaps.map((g) => ({ ...g })),
    quarantine: new Map([...m.quarantine].map(([k, v]) => [k, { ...v }])),
    leased: new Set(m.leased),
    ledger: m.ledger.map((r) => ({ ...r })),
  };
}

// -------------------------------------------------------------------------------------------
// The model's operations: what each spool call must do, written from the spool's invariants.

/**
 * The sample as the spool must give it back. -0 comes back as 0: SQLite stores an integral REAL
 * as an integer, and -0 === 0 for every consumer (PostgreSQL compares them equal too).
 */
function stored(s: WireSample): WireSample {
  return s.v === "-0" ? { ...s, v: 0 } : s;
}

function modelWrite(m: ModelState, groups: WireSample[][]): void {
  for (const g of groups) {
    for (const sample of g) {
      const s = stored(sample);
      const seq = m.nextSeq++;
      m.rows.set(seq, canonical(seq, s));
    }
  }
}

/** Applies a gap the spool reported; throws when it is not a legal drop_oldest of this state. */
function modelDrop(m: ModelState, gap: Gap): void {
  const inside = [...m.rows.keys()].filter((s) => s >= gap.firstSeq && s <= gap.lastSeq);
  if (inside.length !== gap.rows) {
    throw new Failure(`gap ${gap.firstSeq}..${gap.lastSeq} says ${gap.rows} rows, the range held ${inside.length}`);
  }
  const leased = inside.filter((s) => m.leased.has(s));
  if (leased.length > 0) {
    throw new Failure(
      `drop_oldest gave up ${leased.length} leased rows (in flight to the central database), e.g. seq ${leased[0]}`,
    );
  }
  const oldestFree = [...m.rows.keys()].find((s) => !m.leased.has(s));
  if (inside[0] !== gap.firstSeq || inside.at(-1) !== gap.lastSeq || oldestFree !== gap.firstSeq) {
    throw new Failure(
      `gap ${gap.firstSeq}..${gap.lastSeq} is not the oldest unleased rows (oldest unleased: ${oldestFree})`,
    );
  }
  for (const s of inside) {
    m.rows.delete(s);
  }
  m.gaps.push({ ...gap });
  m.gaps.sort((a, b) => a.firstSeq - b.firstSeq);
}

/** A lane's batch: the oldest rows after `after`, a run of consecutive seqs (see SpoolLease.read). */
function modelRead(m: ModelState, after: number, limit: number): number[] {
  const out: number[] = [];
  for (const s of m.rows.keys()) {
    if (out.length >= limit || (out.length > 0 && s !== out.at(-1)! + 1)) break;
    if (s > after) out.push(s);
  }
  return out;
}

function modelRemove(m: ModelState, first: number, last: number): number {
  let n = 0;
  for (const s of [...m.rows.keys()]) {
    if (s >= first && s <= last) {
      m.rows.delete(s);
      m.leased.delete(s);
      n++;
    }
  }
  m.gaps = m.gaps.filter((g) => !(g.firstSeq >= first && g.lastSeq <= last));
  return n;
}

function modelQuarantine(m: ModelState, seqs: number[], reason: string): void {
  for (const s of seqs) {
    m.quarantine.set(s, { reason, reported: false });
    m.rows.delete(s);
    m.leased.delete(s);
  }
}

function modelMinSeq(m: ModelState): number | null {
  const candidates = [m.rows.keys().next().value, m.gaps[0]?.firstSeq].filter((v): v is number => v !== undefined);
  return candidates.length ? Math.min(...candidates) : null;
}

/** Central `kwollect_claim`: false when the range overlaps one already in the ledger. */
function claim(m: ModelState, first: number, last: number, kind: LedgerRange["kind"]): boolean {
  if (m.ledger.some((r) => r.first <= last && r.last >= first)) return false;
  m.ledger.push({ first, last, kind });
  return true;
}

/** Differences between the model and what the spool shows, or undefined when they agree. */
async function compare(m: ModelState, o: Observation): Promise<string | undefined> {
  const problems: string[] = [];
  if (o.spoolId !== m.spoolId) problems.push(`spool id changed from ${m.spoolId} to ${o.spoolId}`);
  if (o.lastSeq !== m.nextSeq - 1) problems.push(`lastSeq ${o.lastSeq}, model ${m.nextSeq - 1}`);
  if (o.nextSeq !== m.nextSeq) problems.push(`next_seq ${o.nextSeq}, model ${m.nextSeq}`);
  const n = m.rows.size;
  if (o.readRows !== n) problems.push(`${o.readRows} rows readable, model ${n}`);
  if (o.rowCount !== n || o.statsRows !== n) problems.push(`rows counter ${o.rowCount}/${o.statsRows}, model ${n}`);
  if (o.readRows === n && o.digest !== await digestOf([...m.rows.values()])) problems.push("row contents differ");
  const gaps = o.gaps.map((g) => `${g.firstSeq}..${g.lastSeq}:${g.rows}`).join(" ");
  const mgaps = m.gaps.map((g) => `${g.firstSeq}..${g.lastSeq}:${g.rows}`).join(" ");
  if (gaps !== mgaps) problems.push(`gaps [${gaps}], model [${mgaps}]`);
  const unrep = o.unreported.map((q) => `${q.seq}`).join(" ");
  const munrep = [...m.quarantine].filter(([, q]) => !q.reported).map(([s]) => s).sort((a, b) => a - b).join(" ");
  if (unrep !== munrep) problems.push(`unreported quarantine [${unrep}], model [${munrep}]`);
  if (o.quarantined !== m.quarantine.size) problems.push(`${o.quarantined} quarantined, model ${m.quarantine.size}`);
  if (o.minSeq !== modelMinSeq(m)) problems.push(`minSeq ${o.minSeq}, model ${modelMinSeq(m)}`);
  return problems.length ? problems.join("; ") : undefined;
}

/** The first rows where the spool and the model differ, to explain a digest mismatch. */
function rowDiff(m: ModelState, rows: string[]): string {
  const model = [...m.rows.values()];
  for (let i = 0; i < Math.max(rows.length, model.length); i++) {
    if (rows[i] !== model[i]) return `first difference at row ${i}: spool ${rows[i]} | model ${model[i]}`;
  }
  return "no row differs";
}

// -------------------------------------------------------------------------------------------
// Random samples

// A realistic number of series (devices × metrics × label sets, about a hundred): the budgets
// here are a few hundred KB, and the series dictionary counts in them.
const DEVICES = ["node-1", "pdu-a", "a\tb", "é∂ü-µ", "x".repeat(40)];
const METRICS = ["power_watt", "prom_node_load1", "wattmetre_power_watt"];
const SPECIAL_VALUES = [NaN, Infinity, -Infinity, -0, 0, 5e-324, 1.7976931348623157e308, -1e-300, 2 ** 53 + 2];

function makeSamples(rand: () => number, n: number, clock: { ms: number }): WireSample[] {
  const out: WireSample[] = [];
  for (let i = 0; i < n; i++) {
    const r = rand();
    clock.ms += rand() < 0.001 ? -3_600_000 : 1 + Math.floor(rand() * 50);
    const micros = Math.floor(rand() * 1000) / 1000;
    // Mostly now; a few from year 2001 and 2100 (far from the spool's epoch).
    const t = r < 0.01 ? 1_000_000_000_000 + micros : r < 0.02 ? 4_102_444_800_000 + micros : clock.ms + micros;
    const textual = rand() < 0.05;
    const value = textual
      ? NaN
      : rand() < 0.05
      ? SPECIAL_VALUES[Math.floor(rand() * SPECIAL_VALUES.length)]!
      : Math.round(rand() * 1e6) / 100;
    const labels: Record<string, unknown> = rand() < 0.3 ? {} : { _device_alias: `alias-${Math.floor(rand() * 3)}` };
    if (textual) labels.value_str = rand() < 0.5 ? "on" : "état: dégradé ⚠";
    if (rand() < 0.001) labels.unique = Math.floor(rand() * 1e9); // a series of its own
    out.push({
      t,
      d: DEVICES[Math.floor(rand() * DEVICES.length)]!,
      m: METRICS[Math.floor(rand() * METRICS.length)]!,
      v: encodeValue(value),
      l: labels,
    });
  }
  return out;
}

/** Batch sizes: empty, single, around the 64-row INSERT of the spool, and large ones. */
const BATCH_SIZES = [0, 1, 1, 2, 3, 7, 63, 64, 65, 127, 128, 129, 200, 333, 1000, 2500, 5000];
/** Without a small budget nothing bounds the spool: smaller batches keep each seed quick. */
const BATCH_SIZES_ROOMY = BATCH_SIZES.filter((n) => n <= 1000);
const LANE_LIMITS = [1, 5, 64, 200, 500, 2000];

// -------------------------------------------------------------------------------------------
// One seed

interface SeedConfig {
  policy: "drop_oldest" | "drop_newest";
  maxBytes: number;
  commitIntervalMs: number;
}

class SeedRun {
  #rand: () => number;
  #cfg: SeedConfig;
  #path: string;
  #actor: LineChild | undefined;
  #m!: ModelState;
  #clock = { ms: 1_790_000_000_000 };
  #lanes: { backfill?: Batch; live?: Batch } = {};
  #liveAfter: number | undefined;
  readonly counts = emptyCounts();
  #step = 0;
  #lastOp = "";
  /** The last operations sent, for the failure message. */
  #history: string[] = [];
  /** Whether this process logged that the spool is full (a condition: logged when it starts). */
  #fullLogged = false;

  constructor(seed: number, dir: string) {
    this.#rand = prng(seed);
    const r = this.#rand();
    // A quarter of the seeds have room; the others fill a spool of a few hundred KB, twice as
    // often under drop_oldest (leases and gaps) as under drop_newest.
    this.#cfg = r < 0.25 ? { policy: "drop_oldest", maxBytes: ROOMY_BYTES, commitIntervalMs: 5 } : {
      policy: r < 0.75 ? "drop_oldest" : "drop_newest",
      maxBytes: (96 + Math.floor(this.#rand() * 320)) * 1024,
      commitIntervalMs: 5 + Math.floor(this.#rand() * 20),
    };
    this.#path = `${dir}/spool/spool.db`;
  }

  get config(): SeedConfig {
    return this.#cfg;
  }

  #int(n: number): number {
    return Math.floor(this.#rand() * n);
  }

  async #spawn(): Promise<string> {
    this.#fullLogged = false;
    const actor = new LineChild(ACTOR, [
      this.#path,
      this.#cfg.policy,
      String(this.#cfg.maxBytes),
      String(this.#cfg.commitIntervalMs),
    ]);
    this.#actor = actor;
    const reply = await this.#reply();
    if (!reply.ok) throw new Failure(`the spool did not open: ${reply.error}`);
    return (reply.result as { spoolId: string }).spoolId;
  }

  async #reply(): Promise<Reply> {
    const line = await this.#actor!.next(REPLY_TIMEOUT_MS);
    if (line === undefined) {
      throw new Failure(`the spool process stopped answering (${this.#lastOp}): ${this.#actor!.stderrTail}`);
    }
    const reply = JSON.parse(line) as Reply;
    for (const l of reply.logs) {
      if (/Spool full/.test(l)) this.#fullLogged = true;
      if (/Spool has room again/.test(l)) this.#fullLogged = false;
    }
    return reply;
  }

  /** Sends a command without waiting for its answer. */
  async #send(cmd: Command): Promise<void> {
    this.#lastOp = cmd.op;
    if (cmd.op !== "observe") {
      const { op, ...args } = cmd;
      const brief = op === "append"
        ? `${cmd.groups.map((g) => g.length).join("+")} samples, ${cmd.commit}`
        : op === "quarantine"
        ? cmd.samples.map((x) => x.seq).join(",")
        : JSON.stringify(args);
      this.#history.push(`${this.#step}:${op}(${brief})`);
      if (this.#history.length > 40) this.#history.shift();
    }
    await this.#actor!.send(JSON.stringify(cmd));
  }

  async #call<T>(cmd: Command): Promise<T> {
    await this.#send(cmd);
    const reply = await this.#reply();
    if (!reply.ok) throw new Failure(`${cmd.op} failed: ${reply.error}`);
    return reply.result as T;
  }

  async #observe(full = false): Promise<Observation> {
    return await this.#call<Observation>({ op: "observe", full });
  }

  async #check(what: string): Promise<Observation> {
    const o = await this.#observe();
    await this.#expect(this.#m, o, what);
    return o;
  }

  /** Throws a Failure naming the first differing row when the spool and `m` disagree. */
  async #expect(m: ModelState, o: Observation, what: string): Promise<void> {
    const problem = await compare(m, o);
    if (!problem) return;
    const detail = problem.includes("row contents") ? ` (${rowDiff(m, (await this.#observe(true)).rows!)})` : "";
    throw new Failure(`after ${what}: ${problem}${detail}`);
  }

  /**
   * Kills the spool's process, starts a new one, and settles an operation cut by the crash:
   * `candidates` lists the states it allows, given the answer the process had already written
   * (then the operation was acknowledged, and only its outcome is allowed).
   */
  async #crash(what: string, candidates: (o: Observation, answer: Reply | undefined) => ModelState[]): Promise<void> {
    this.#history.push(`${this.#step}:CRASH`);
    await this.#actor!.kill();
    const answer = this.#actor!.drain().map((l) => JSON.parse(l) as Reply).findLast((r) => r.ok);
    if (answer) this.counts.answeredBeforeCrash++;
    const spoolId = await this.#spawn();
    if (spoolId !== this.#m.spoolId) {
      throw new Failure(`after a crash ${what}: spool id ${spoolId}, was ${this.#m.spoolId}`);
    }
    const o = await this.#observe();
    const options = candidates(o, answer);
    const problems: string[] = [];
    for (const [i, c] of options.entries()) {
      const problem = await compare(c, o);
      if (problem === undefined) {
        if (options.length > 1) {
          if (i === 0) this.counts.inDoubtAfter++;
          else this.counts.inDoubtBefore++;
        }
        this.#m = c;
        this.#afterRestart();
        await this.#reconcile();
        return;
      }
      problems.push(problem);
    }
    throw new Failure(
      `after a crash ${what}: the spool matches no state the operation allows: ${problems.join(" | ")}`,
    );
  }

  #afterRestart(): void {
    this.#m.leased.clear();
    this.#lanes = {};
    this.#liveAfter = undefined;
  }

  async run(steps: number): Promise<void> {
    const spoolId = await this.#spawn();
    this.#m = {
      spoolId,
      nextSeq: 1,
      rows: new Map(),
      gaps: [],
      quarantine: new Map(),
      leased: new Set(),
      ledger: [],
    };
    await this.#check("open");
    for (this.#step = 0; this.#step < steps; this.#step++) {
      this.counts.steps++;
      await this.#randomStep();
    }
    await this.#drain();
    await this.#call({ op: "exit" });
    await this.#actor!.close();
    this.#actor = undefined;
  }

  async abandon(): Promise<void> {
    await this.#actor?.kill();
    this.#actor = undefined;
  }

  get where(): string {
    return `step ${this.#step} (${this.#lastOp}; last operations: ${this.#history.slice(-15).join(" ")})`;
  }

  async #randomStep(): Promise<void> {
    // Small budgets weigh appends more, so the full-spool policy meets leases and half-sent
    // (bisected) batches often.
    const roomy = this.#cfg.maxBytes === ROOMY_BYTES;
    const weights: [string, number][] = [
      ["append", roomy ? 34 : 44],
      ["lane", 26],
      ["gaps", 3],
      ["quarantine", roomy ? 3 : 2],
      ["reconcile", roomy ? 2 : 1],
      ["gc", roomy ? 2 : 1],
      ["checkpoint", roomy ? 3 : 2],
      ["reopen", roomy ? 4 : 3],
      ["crashIdle", roomy ? 4 : 3],
      ["crashMidOp", roomy ? 19 : 15],
    ];
    let r = this.#rand() * weights.reduce((n, [, w]) => n + w, 0);
    const op = weights.find(([, w]) => (r -= w) < 0)?.[0] ?? "append";
    switch (op) {
      case "append":
        return await this.#append(false);
      case "lane":
        return await this.#laneStep(false);
      case "gaps":
        return await this.#reportGaps();
      case "quarantine":
        return await this.#reportQuarantine();
      case "reconcile":
        return await this.#reconcile();
      case "gc":
        this.counts.gc++;
        await this.#call({ op: "gc" });
        await this.#check("gc");
        return;
      case "checkpoint":
        this.counts.checkpoints++;
        await this.#call({ op: "checkpoint" });
        await this.#check("checkpoint");
        return;
      case "reopen":
        this.counts.reopens++;
        await this.#call({ op: "reopen" });
        this.#afterRestart();
        await this.#check("close and reopen");
        await this.#reconcile();
        return;
      case "crashIdle":
        this.counts.crashesIdle++;
        return await this.#crash("while idle", () => [clone(this.#m)]);
    }
    this.counts.crashesMidOp++;
    const kind = this.#int(6);
    if (kind <= 1) return await this.#append(true);
    if (kind <= 3) return await this.#laneStep(true);
    const cmd: Command = kind === 4 ? { op: "checkpoint" } : { op: "reopen" };
    await this.#send(cmd);
    await sleep(this.#rand() * 6);
    await this.#crash(`during ${cmd.op}`, () => [clone(this.#m)]);
  }

  // --- appends --------------------------------------------------------------------------------

  async #append(crash: boolean): Promise<void> {
    const groups: WireSample[][] = [];
    const nGroups = 1 + this.#int(3);
    // A big commit while a batch is in flight is what the leases are for: make it likely.
    if (this.#m.leased.size > 0 && this.#rand() < 0.3) groups.push(makeSamples(this.#rand, 5000, this.#clock));
    for (let i = 0; i < nGroups; i++) {
      const sizes = this.#cfg.maxBytes > ROOMY_BYTES / 2 ? BATCH_SIZES_ROOMY : BATCH_SIZES;
      groups.push(makeSamples(this.#rand, sizes[this.#int(sizes.length)]!, this.#clock));
    }
    const count = groups.reduce((n, g) => n + g.length, 0);
    const commit = this.#rand() < 0.5 ? "now" : "timer";
    this.counts.appends++;
    this.counts.samplesOffered += count;
    const cmd: Command = { op: "append", groups, commit };
    if (crash) {
      await this.#send(cmd);
      await sleep(this.#rand() * (this.#cfg.commitIntervalMs + 10));
      const before = clone(this.#m);
      return await this.#crash(`during an append of ${count} samples`, (o, answer) => {
        const base = this.#withNewGaps(before, o);
        const written = clone(base);
        modelWrite(written, groups);
        if (!answer) return [written, base];
        return (answer.result as AppendResult).droppedNewest > 0 ? [base] : [written];
      });
    }
    await this.#send(cmd);
    const reply = await this.#reply();
    if (!reply.ok) throw new Failure(`append failed: ${reply.error}`);
    const res = reply.result as AppendResult;
    if (res.rejected.length > 0) throw new Failure(`append of ${count} samples rejected: ${res.rejected[0]}`);
    const o = await this.#observe();
    const leasedBefore = this.#m.leased.size;
    const dropped = this.#withNewGaps(this.#m, o);
    const known = new Set(this.#m.gaps.map((g) => g.firstSeq));
    const fresh = dropped.gaps.filter((g) => !known.has(g.firstSeq));
    const newGaps = fresh.length;
    if (count > 0 && res.usedBefore + count * SAMPLE_BYTES_BOUND <= this.#cfg.maxBytes) {
      if (res.droppedNewest > 0 || res.droppedOldest > 0) {
        throw new Failure(
          `samples dropped although the spool had room (${res.usedBefore} B used of ${this.#cfg.maxBytes})`,
        );
      }
    }
    const unleased = [...this.#m.rows.keys()].some((seq) => !this.#m.leased.has(seq));
    if (
      this.#cfg.policy === "drop_oldest" && count > 0 && res.usedBefore > this.#cfg.maxBytes && unleased &&
      res.droppedOldest === 0
    ) {
      throw new Failure(`the spool was over budget (${res.usedBefore} B) and dropped none of its unleased rows`);
    }
    if (res.droppedOldest !== fresh.reduce((n, g) => n + g.rows, 0)) {
      throw new Failure(`droppedOldest counter ${res.droppedOldest} does not match the new gaps`);
    }
    if ((res.droppedNewest > 0 || newGaps > 0) && !this.#fullLogged) {
      throw new Failure(
        `${res.droppedNewest} new and ${fresh.map((g) => `${g.firstSeq}..${g.lastSeq}`).join(", ")} oldest samples ` +
          `were dropped while no "Spool full" condition was logged (logs: ${reply.logs.join(" | ")})`,
      );
    }
    this.#m = dropped;
    if (newGaps > 0) {
      this.counts.dropOldestEvents += newGaps;
      this.counts.droppedOldest += res.droppedOldest;
    }
    if (res.droppedNewest > 0) {
      if (this.#cfg.policy !== "drop_newest" || res.droppedNewest !== count) {
        throw new Failure(`droppedNewest ${res.droppedNewest} of a commit of ${count} under ${this.#cfg.policy}`);
      }
      this.counts.droppedNewest += count;
    } else {
      modelWrite(this.#m, groups);
      this.counts.samplesAcked += count;
    }
    // Invariant 5: the budget is exceeded by at most one commit (and by rows it may not drop).
    const slack = (count + leasedBefore) * SAMPLE_BYTES_BOUND + 4 * PAGE;
    // An empty append commits nothing (a crash may have left the spool over its budget until the
    // next commit).
    if (count > 0 && res.usedAfter > this.#cfg.maxBytes + slack) {
      throw new Failure(
        `spool uses ${res.usedAfter} B (${res.usedBefore} B before, ${res.droppedOldest} rows dropped, ` +
          `${leasedBefore} leased), budget ${this.#cfg.maxBytes} B + one commit of ${count}`,
      );
    }
    await this.#expect(this.#m, o, `an append of ${count} samples (${commit})`);
  }

  /** The model with the gaps the spool shows and the model lacks applied as drops (validated). */
  #withNewGaps(m: ModelState, o: Observation): ModelState {
    const known = new Set(m.gaps.map((g) => g.firstSeq));
    const next = clone(m);
    for (const g of o.gaps) {
      if (known.has(g.firstSeq)) continue;
      if (!/drop_oldest/.test(g.reason)) throw new Failure(`gap ${g.firstSeq}..${g.lastSeq} has reason '${g.reason}'`);
      modelDrop(next, { firstSeq: g.firstSeq, lastSeq: g.lastSeq, rows: g.rows });
    }
    return next;
  }

  // --- the forwarder's lanes ------------------------------------------------------------------

  async #laneStep(crash: boolean): Promise<void> {
    const lane = this.#rand() < 0.5 ? "backfill" : "live";
    if (!this.#lanes[lane]) {
      if (!crash) return await this.#laneRead(lane);
      // A crash is aimed at a send: read the batch first.
      await this.#laneRead(lane);
    }
    const batch = this.#lanes[lane];
    if (!batch) {
      // Nothing to send. A read changes nothing durable: after the crash, the state is the same.
      await this.#send({ op: "read", after: 0, limit: 500 });
      await sleep(this.#rand() * 3);
      return await this.#crash("during a read", () => [clone(this.#m)]);
    }
    const r = this.#rand();
    if (r < 0.1 && !crash) {
      // The send failed: the forwarder resets its connection and forgets every lease.
      this.#lanes = {};
      await this.#call({ op: "releaseLeases" });
      this.#m.leased.clear();
      await this.#check("releaseLeases");
      return;
    }
    delete this.#lanes[lane];
    const poison = r < 0.4 ? batch.samples[this.#int(batch.samples.length)]!.seq! : undefined;
    await this.#sendIsolating(batch.samples, poison, crash ? this.#int(4) : -1);
  }

  async #laneRead(lane: "backfill" | "live"): Promise<void> {
    const limit = LANE_LIMITS[this.#int(LANE_LIMITS.length)]!;
    // As the forwarder: the live lane starts after the newest seq when a backlog is found; once
    // the backlog is gone (nothing left at or below liveAfter), a new one starts.
    const oldest = this.#m.rows.keys().next().value;
    if (
      lane === "live" &&
      (this.#liveAfter === undefined || oldest === undefined || oldest > this.#liveAfter || this.#rand() < 0.1)
    ) {
      this.#liveAfter = this.#m.nextSeq - 1;
    }
    const after = lane === "live" ? this.#liveAfter! : 0;
    const predicted = modelRead(this.#m, after, limit);
    // The forwarder's lanes never hold the same row: skip a read that would overlap the other.
    const other = this.#lanes[lane === "live" ? "backfill" : "live"];
    if (other && predicted.some((s) => s >= other.first && s <= other.last)) return;
    const got = await this.#call<WireSample[]>({ op: "read", after, limit });
    this.counts.reads++;
    const want = predicted.map((s) => this.#m.rows.get(s)!);
    const have = got.map((w) => canonical(w.seq!, w));
    if (want.join("\n") !== have.join("\n")) {
      throw new Failure(
        `read(${after}, ${limit}) returned [${have.slice(0, 3).join(" | ")} ...] (${have.length} rows), model [${
          want.slice(0, 3).join(" | ")
        } ...] (${want.length})`,
      );
    }
    for (const s of predicted) this.#m.leased.add(s);
    if (got.length > 0) this.#lanes[lane] = { samples: got, first: got[0]!.seq!, last: got.at(-1)!.seq! };
  }

  /**
   * The forwarder's #sendIsolating: a batch that the central database rejects because of one
   * poison sample is halved until that sample is alone, then quarantined and reported; the
   * rest lands. Each central commit is followed by the local delete. `crashAt` >= 0 kills the
   * spool's process during the crashAt-th local operation (or the last one).
   */
  async #sendIsolating(batch: WireSample[], poison: number | undefined, crashAt: number): Promise<void> {
    const plan: { central: () => void; cmd: Command; model: (m: ModelState) => unknown; what: string }[] = [];
    const visit = (part: WireSample[]) => {
      const first = part[0]!.seq!;
      const last = part.at(-1)!.seq!;
      if (poison === undefined || poison < first || poison > last) {
        plan.push({
          what: `removeForwarded(${first}, ${last})`,
          central: () => {
            if (!claim(this.#m, first, last, "data")) {
              throw new Failure(`batch ${first}..${last} overlaps the central ledger: a row was sent twice`);
            }
          },
          cmd: { op: "remove", first, last },
          model: (m) => modelRemove(m, first, last),
        });
        return;
      }
      if (part.length === 1) {
        plan.push({
          what: `quarantine(${first})`,
          central: () => {},
          cmd: { op: "quarantine", samples: part, reason: POISON_REASON },
          model: (m) => modelQuarantine(m, [first], POISON_REASON),
        });
        plan.push({
          what: `markQuarantineReported(${first})`,
          central: () => {
            claim(this.#m, first, first, "quarantined");
          },
          cmd: { op: "markReported", seq: first },
          model: (m) => {
            m.quarantine.get(first)!.reported = true;
          },
        });
        return;
      }
      const mid = Math.floor(part.length / 2);
      visit(part.slice(0, mid));
      visit(part.slice(mid));
    };
    visit(batch);
    const crashIndex = crashAt < 0 ? -1 : Math.min(crashAt, plan.length - 1);
    for (const [i, p] of plan.entries()) {
      p.central();
      if (i === crashIndex) {
        const before = clone(this.#m);
        if (this.#rand() < 0.5) {
          // Killed between the central commit and the local operation (a lost acknowledgement):
          // reconciliation with the ledger must remove what was committed.
          this.counts.crashesAfterCentralCommit++;
          return await this.#crash(`after the central commit, before ${p.what}`, () => [before]);
        }
        await this.#send(p.cmd);
        await sleep(this.#rand() * 4);
        return await this.#crash(`during ${p.what}`, (_o, answer) => {
          const after = clone(before);
          p.model(after);
          return answer ? [after] : [after, before];
        });
      }
      const result = await this.#call<unknown>(p.cmd);
      const expected = p.model(this.#m);
      if (expected !== undefined && result !== expected) {
        throw new Failure(`${p.what} returned ${result}, model ${expected}`);
      }
      if (p.cmd.op === "remove") this.counts.forwarded += result as number;
      if (p.cmd.op === "quarantine") this.counts.quarantined++;
    }
    await this.#check(`sending ${batch[0]!.seq}..${batch.at(-1)!.seq}${poison ? ` with poison ${poison}` : ""}`);
  }

  /** The forwarder's #reportGaps: claim each gap as `dropped` (the parts not yet claimed), then forget it. */
  async #reportGaps(mayCrash = true): Promise<void> {
    for (const gap of [...this.#m.gaps]) {
      if (!claim(this.#m, gap.firstSeq, gap.lastSeq, "dropped")) {
        const taken = this.#m.ledger.filter((r) => r.last >= gap.firstSeq && r.first <= gap.lastSeq)
          .sort((a, b) => a.first - b.first);
        let cursor = gap.firstSeq;
        for (const t of taken) {
          if (t.first > cursor) claim(this.#m, cursor, t.first - 1, "dropped");
          cursor = Math.max(cursor, t.last + 1);
        }
        if (cursor <= gap.lastSeq) claim(this.#m, cursor, gap.lastSeq, "dropped");
      }
      if (mayCrash && this.#rand() < 0.1) {
        const before = clone(this.#m);
        await this.#send({ op: "removeGap", first: gap.firstSeq });
        await sleep(this.#rand() * 3);
        this.counts.crashesMidOp++;
        return await this.#crash(`during removeGap(${gap.firstSeq})`, (_o, answer) => {
          const after = clone(before);
          after.gaps = after.gaps.filter((g) => g.firstSeq !== gap.firstSeq);
          return answer ? [after] : [after, before];
        });
      }
      await this.#call({ op: "removeGap", first: gap.firstSeq });
      this.#m.gaps = this.#m.gaps.filter((g) => g.firstSeq !== gap.firstSeq);
    }
    await this.#check("reporting gaps");
  }

  /** The forwarder's #reportQuarantine: claim each unreported seq, then mark it reported. */
  async #reportQuarantine(): Promise<void> {
    for (const [seq, q] of [...this.#m.quarantine]) {
      if (q.reported) continue;
      claim(this.#m, seq, seq, "quarantined");
      await this.#call({ op: "markReported", seq });
      q.reported = true;
    }
    await this.#check("reporting quarantine");
  }

  /** The forwarder's #reconcile: remove every range the central ledger holds. */
  async #reconcile(): Promise<void> {
    const min = modelMinSeq(this.#m);
    if (min === null) return;
    for (const r of [...this.#m.ledger].sort((a, b) => a.first - b.first)) {
      if (r.last < min) continue;
      const removed = await this.#call<number>({ op: "remove", first: r.first, last: r.last });
      const expected = modelRemove(this.#m, r.first, r.last);
      if (removed !== expected) {
        throw new Failure(`reconcile removeForwarded(${r.first}, ${r.last}) removed ${removed}, model ${expected}`);
      }
      this.counts.reconciled += removed;
    }
    await this.#check("reconciling with the ledger");
  }

  // --- end of a seed --------------------------------------------------------------------------

  /** Forwards everything, then checks the central ledger tiles every seq ever assigned. */
  async #drain(): Promise<void> {
    this.#lanes = {};
    await this.#call({ op: "releaseLeases" });
    this.#m.leased.clear();
    await this.#reconcile();
    await this.#reportGaps(false);
    await this.#reportQuarantine();
    for (;;) {
      const got = await this.#call<WireSample[]>({ op: "read", after: 0, limit: 5000 });
      if (got.length === 0) break;
      await this.#sendIsolating(got, undefined, -1);
    }
    await this.#check("the final drain");
    const ranges = [...this.#m.ledger].sort((a, b) => a.first - b.first);
    let expect = 1;
    for (const r of ranges) {
      if (r.first !== expect) {
        const near = ranges.filter((x) => x.last >= expect - 2000 && x.first <= r.last + 2000)
          .map((x) => `${x.kind} ${x.first}..${x.last}`).join(", ");
        throw new Failure(
          `the central ledger ${r.first < expect ? "overlaps" : "has a hole"} at seq ${Math.min(r.first, expect)} ` +
            `(ledger near it: ${near})`,
        );
      }
      expect = r.last + 1;
    }
    if (expect !== this.#m.nextSeq) {
      throw new Failure(`the central ledger ends at ${expect - 1}, last seq ${this.#m.nextSeq - 1}`);
    }
    const quarantined = ranges.filter((r) => r.kind === "quarantined").length;
    if (quarantined !== this.#m.quarantine.size) {
      throw new Failure(`${quarantined} quarantined ledger rows for ${this.#m.quarantine.size} quarantined samples`);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Seed i of a run: spread so that consecutive runs do not share seeds. */
export function seedOf(base: number, i: number): number {
  return (Math.imul(base, 0x9e3779b1) + i * 7919) >>> 0;
}

/**
 * Runs one seed (a failure names its seed: `runModelSeed(seed)` replays it exactly). The spool
 * directory of a failed seed is kept for inspection.
 */
export async function runModelSeed(
  seed: number,
): Promise<{ config: SeedConfig; counts: SeedCounts; failure: string | undefined }> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-model-" });
  const run = new SeedRun(seed, dir);
  const cfg = run.config;
  try {
    await run.run(STEPS_PER_SEED);
  } catch (err) {
    await run.abandon();
    const message = err instanceof Error ? err.message : String(err);
    return {
      config: cfg,
      counts: run.counts,
      failure: `seed ${seed} (${cfg.policy}, ${cfg.maxBytes} B, kept in ${dir}) ${run.where}: ${message}`,
    };
  }
  await Deno.remove(dir, { recursive: true });
  return { config: cfg, counts: run.counts, failure: undefined };
}

export async function runSpoolModel(size: ScenarioSize): Promise<ScenarioResult> {
  const started = performance.now();
  const totals: Record<string, number> = { ...emptyCounts() };
  const failures: string[] = [];
  const configs = { roomy: 0, drop_oldest: 0, drop_newest: 0 };
  for (let i = 0; i < size.iterations; i++) {
    const seed = seedOf(size.seed, i);
    const outcome = await runModelSeed(seed);
    configs[outcome.config.maxBytes === ROOMY_BYTES ? "roomy" : outcome.config.policy]++;
    if (outcome.failure) failures.push(outcome.failure);
    for (const [k, v] of Object.entries(outcome.counts)) totals[k] = (totals[k] ?? 0) + v;
  }
  return {
    name: "spool model",
    fault:
      "Random interleavings of appends, lane reads, acks, quarantines, gap reports, reconciliation, checkpoints, " +
      "reopens and SIGKILLs of the spool's process (idle and mid-operation), under drop_oldest and drop_newest with small budgets",
    criteria: "After every step the spool holds exactly what the model predicts (acknowledged appends survive, " +
      "crashes are atomic, seqs never reused, spool id stable, drops recorded as exact gaps never touching leased rows), " +
      "and after the final drain the central ledger tiles 1..lastSeq without hole or overlap",
    passed: failures.length === 0,
    counts: {
      seeds: size.iterations,
      seeds_failed: failures.length,
      seeds_roomy: configs.roomy,
      seeds_drop_oldest: configs.drop_oldest,
      seeds_drop_newest: configs.drop_newest,
      ...totals,
      ...(failures.length ? { first_failure: failures[0]! } : {}),
    },
    durationMs: Math.round(performance.now() - started),
    notes: failures.length > 1 ? failures.slice(1, 5) : [],
  };
}
