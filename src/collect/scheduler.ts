import type { Config } from "../config/defaults.ts";
import { canonicalLabels, type MetricEntry } from "../config/metrics_dir.ts";
import { errorMessage } from "../log.ts";
import type { Sample, SampleBatch, SeriesIdentity } from "../sample.ts";
import { batchSize, sampleProblem, timestampProblem, toSampleValue } from "../sample.ts";
import type { DeviceStatus } from "../spool/spool.ts";
import type { EntryError, PollResult, Reading, Source } from "../sources/source.ts";
import type { TlsPins } from "../spool/tls_pins.ts";
import { type Clock, deadline, DeadlineError } from "../clock.ts";
import type { PollGroup } from "./groups.ts";
import { pollKeyOf, SeriesIdentities } from "./series_identity.ts";
import { TimeSlice } from "../time_slice.ts";
import { Wakeups } from "./wakeups.ts";
import {
  COLLECTOR_LATE,
  DEVICE_BEHIND,
  DEVICE_FAILING,
  ENTRY_ERROR,
  ENTRY_FAILING,
  POLL_FAILED,
  POLL_MISSED,
  POLL_OK,
  POLL_SKIPPED,
  SAMPLES_LOST,
  SAMPLES_POLLED,
  SPOOL_WRITE_FAILING,
} from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";

/**
 * Owns every poll timer. Each group is polled on its own fixed grid (slot k at
 * phase + k × period in monotonic time), so periods never drift; the phase is derived from the
 * group's key, so restarts keep it and groups do not all fire together. Phases are whole
 * multiples of PHASE_STEP_MS: the groups due at one instant are polled in one wake-up of the
 * process, from one timer for all groups (src/collect/wakeups.ts). The timestamp of a sample is
 * the wall-clock time when its request is sent.
 *
 * Each poll has the timeout `poll_timeout_ms`, whatever the period (Kwollect waited up to 30 s
 * for a device): the poll is failed when it expires, and the source is told to stop. A poll
 * never overlaps the previous one of its group: while a poll (or a source that has not yet let
 * go of its request) is still running, the group's slots are skipped and counted, so a device
 * that answers in 1.5 s at a 1 s period gives a sample every 2 s. Every group has its own slots
 * and timeout, and a wake-up only starts polls (their ends are awaited apart), so one slow or
 * dead device never delays another; and a large poll becomes samples and reaches the spool in
 * time slices (src/time_slice.ts), each part acknowledged on its own, so a device of 50,000 series
 * does not hold up another's slots either. A source that hands its
 * readings over as it reads them (`Source.poll`'s `handOver`) is paced by the spool: past
 * POLL_HELD_MAX samples (POLL_HELD_UNCACHED_MAX of series without a cached identity), it reads on
 * once they are stored, so what a poll holds is bounded by that, not by the device; that wait
 * counts in the poll's timeout. Samples handed over before a poll fails are kept; the poll counts
 * as failed.
 *
 * Every slot of the grid is accounted for, once: polled (ok or failed), skipped (the previous
 * poll still running) or missed (its timer fired a period or more late: the process was stalled
 * or starved of CPU, and the group resumes at the next slot due). Before the first grid slot,
 * which comes at least half a period after the poll at start, there is none to count. The polls
 * at start go out one after the other (START_POLL_GAP_MS apart, in the order of the groups'
 * phases), so a collector of a thousand devices does not ask them all at the same instant.
 *
 * One stored sample per series and poll: when entries of a group select overlapping values (two
 * Prometheus entries naming the same metric, the same OID and labels twice), each (device,
 * metric, labels, timestamp) is kept once, the first entry's.
 */
export interface SchedulerOptions {
  groups: PollGroup[];
  config: Config;
  clock: Clock;
  /** Hands samples to the spool; resolves when they are durable. */
  deliver: (samples: SampleBatch) => Promise<void>;
  /** Optional metrics: whether an entry is polled this cycle (default: non-optional only). */
  isActive?(entry: MetricEntry): boolean;
  /** Where polls, failures and losses are logged and counted (a private one by default). */
  telemetry?: Telemetry;
  /** Certificates pinned for https urls (the spool's, under `run`). */
  tlsPins?: TlsPins;
  /**
   * Called at the end of each of the scheduler's wake-ups, its timer set again (see Wakeups):
   * the pipeline's housekeeping rides on it instead of waking the process once more.
   */
  onWake?: () => void;
}

export interface GroupCounters {
  pollsOk: number;
  pollsFailed: number;
  pollsSkipped: number;
  /** Slots that passed while the process was late (the timer fired a period or more after them). */
  pollsMissed: number;
  samples: number;
  samplesAcknowledged: number;
  samplesLost: number;
  entryErrors: number;
}

/**
 * Time between two groups' polls at start (400 a second: a thousand SNMP devices are asked over
 * 2.5 s, at twice the rate of their 5 s grid, instead of at once).
 */
const START_POLL_GAP_MS = 2.5;
/**
 * Phases are multiples of this (ms): the 1,000 groups of a 5 s period share 100 instants, ten
 * groups a wake-up of the process instead of one wake-up each. A wake-up costs more CPU than a
 * poll's own work, and ten polls started together are all sent within a millisecond
 * (docs/PERFORMANCE.md `sched5`).
 */
export const PHASE_STEP_MS = 50;
/** A device behind schedule (or a late collector) is back on it after this long without a skipped (missed) slot. */
const BEHIND_QUIET_MS = 60_000;
/** Readings turned into samples between two looks at the time slice (src/time_slice.ts). */
const READINGS_BETWEEN_LOOKS = 500;
/**
 * Most samples in one part of a poll handed to the spool: the spool commits whole parts, and
 * storing a sample costs more than making it (src/spool/writer.ts COMMIT_SLICE_SAMPLES).
 */
const PART_MAX_SAMPLES = 2_000;

/**
 * Most samples of one poll held back while its source reads on (see `Source.poll`'s `handOver`):
 * past it, they go to the spool together and the source reads on once they are stored. With the
 * readings of a part, what a large poll holds at a time. A poll of fewer samples (most of them)
 * reaches the spool at its end, all at once, in one commit and one forwarded batch.
 */
export const POLL_HELD_MAX = 10_000;

/**
 * Most samples of series without a cached identity (src/collect/series_identity.ts) one poll holds
 * back: each has its labels, keys and duplicate-check key of its own where a known series' sample
 * shares its identity's, and a device past the identity cache's bound (the hostile bench's
 * 50,000-series exporter) sends them by the ten thousand. Held until stored, they outlive the
 * young generation's collections: fewer at a time is a smaller heap at its peak (docs/
 * PERFORMANCE.md `series4`). A poll of known series still reaches the spool in one commit.
 */
export const POLL_HELD_UNCACHED_MAX = 2_000;

/** What a poll made of the readings its source handed over. */
class PollTaking {
  readonly sentAtMs: number;
  /** Made at the first part, so a poll that fails before any does not start a round of the identities. */
  door: PollSamples | undefined;
  readonly refused: EntryError[] = [];
  /** Samples made and not yet handed to the spool, in parts, and their number. */
  held: SampleBatch[] = [];
  heldSamples = 0;
  /** Of which samples of series without a cached identity. */
  heldUncached = 0;

  constructor(sentAtMs: number) {
    this.sentAtMs = sentAtMs;
  }
}

interface GroupState {
  group: PollGroup;
  source: Source;
  timeoutMs: number;
  phaseMs: number;
  /** Monotonic time of the last skipped slot. */
  lastSkipAtMs: number;
  /** Index of the last slot armed (-Infinity until the poll at start): a slot is armed once. */
  lastSlot: number;
  inFlight: Promise<void> | undefined;
  abort: AbortController | undefined;
  counters: GroupCounters;
  failingEntries: Set<string>;
  /** The state of each device of the group, by device id (its key in the spool names the group too). */
  devices: Map<string, DeviceState>;
  identities: SeriesIdentities;
}

/**
 * A device's state in one group, changed in place at each of its polls (the spool's local state
 * writes it when its poll time changed). Its key is made when read: a collector of 5,000 devices
 * kept 5,000 key strings.
 */
class DeviceState implements DeviceStatus {
  lastPollAtMs: number | undefined = undefined;
  lastOkAtMs: number | undefined = undefined;
  lastError: string | undefined = undefined;
  pollsOk = 0;
  pollsFailed = 0;
  pollsSkipped = 0;

  constructor(readonly deviceId: string, readonly group: string) {}

  get key(): string {
    return `${this.deviceId} ${this.group}`;
  }
}

export class Scheduler {
  #opts: SchedulerOptions;
  #states: GroupState[];
  #running = false;
  #deliveries = new Set<Promise<void>>();
  #originMono = 0;
  #telemetry: Telemetry;
  /** Monotonic time of the last missed slot, any group. */
  #lastMissAtMs = -Infinity;
  /** Every group's next slot (or poll at start), behind one timer. */
  #wakeups: Wakeups<GroupState>;

  constructor(opts: SchedulerOptions) {
    this.#opts = opts;
    this.#telemetry = opts.telemetry ?? new Telemetry({ now: () => opts.clock.monotonic() });
    this.#states = opts.groups.map((group) => {
      const timeoutMs = opts.config.poll_timeout_ms;
      return {
        group,
        source: group.open({ timeoutMs, ...(opts.tlsPins && { tlsPins: opts.tlsPins }) }),
        timeoutMs,
        phaseMs: phaseOf(group.key, group.periodMs),
        lastSkipAtMs: -Infinity,
        lastSlot: -Infinity,
        inFlight: undefined,
        abort: undefined,
        counters: {
          pollsOk: 0,
          pollsFailed: 0,
          pollsSkipped: 0,
          pollsMissed: 0,
          samples: 0,
          samplesAcknowledged: 0,
          samplesLost: 0,
          entryErrors: 0,
        },
        failingEntries: new Set(),
        devices: new Map(),
        identities: new SeriesIdentities(),
      };
    });
    // A group whose poll at start is due has no slot armed yet.
    this.#wakeups = new Wakeups(
      opts.clock,
      (s) => Number.isFinite(s.lastSlot) ? this.#slot(s) : this.#startPoll(s),
      opts.onWake,
    );
  }

  start(): void {
    this.#running = true;
    // The grid origin is the wall clock's epoch expressed in monotonic time, so slots fall on
    // whole multiples of the period (plus the group's phase) in wall-clock time too.
    const { clock } = this.#opts;
    this.#originMono = clock.monotonic() - clock.now();
    // Each group is polled once at start, so a (re)started collector has data within moments,
    // then joins its grid at the first slot at least half a period later. The polls at start go
    // out one every START_POLL_GAP_MS in the order of the groups' phases (a group waiting at most
    // half its period): a thousand devices are not all asked at the same instant.
    const byPhase = this.#states.toSorted((a, b) => a.phaseMs / a.group.periodMs - b.phaseMs / b.group.periodMs);
    const startMs = clock.monotonic();
    byPhase.forEach((s, rank) => {
      const delayMs = Math.floor(Math.min(rank * START_POLL_GAP_MS, s.group.periodMs / 2));
      if (delayMs === 0) return this.#startPoll(s);
      this.#wakeups.add(startMs + delayMs, s);
    });
  }

  #startPoll(s: GroupState): void {
    if (!this.#running) return;
    this.#launch(s);
    this.#arm(s, s.group.periodMs / 2);
  }

  /** Stops the timers, lets in-flight polls finish (or time out) and waits for their commit. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#wakeups.clear();
    await Promise.all(this.#states.map((s) => s.inFlight));
    await Promise.allSettled([...this.#deliveries]);
    await Promise.all(this.#states.map((s) => s.source.close().catch(() => {})));
  }

  counters(): { group: string; scheme: string; counters: GroupCounters }[] {
    return this.#states.map((s) => ({ group: s.group.name, scheme: s.group.scheme, counters: { ...s.counters } }));
  }

  deviceStatus(): DeviceStatus[] {
    return this.#states.flatMap((s) => [...s.devices.values()]);
  }

  /** Arms the group's next grid slot that is at least `minDelayMs` away. */
  #arm(s: GroupState, minDelayMs = 0): void {
    if (!this.#running) return;
    const { clock } = this.#opts;
    const period = s.group.periodMs;
    const now = clock.monotonic() - this.#originMono;
    // Timers may fire up to a millisecond early: never arm a slot that was already armed.
    const k = Math.max(s.lastSlot + 1, Math.floor((now + minDelayMs - s.phaseMs) / period) + 1);
    // Slots between the one just handled and the next armed passed while the timer was late.
    if (Number.isFinite(s.lastSlot) && k > s.lastSlot + 1) this.#missed(s, k - s.lastSlot - 1);
    s.lastSlot = k;
    // Grid offsets are whole milliseconds: groups due at one instant get the same time, to the bit.
    this.#wakeups.add(this.#originMono + (s.phaseMs + k * period), s);
  }

  #missed(s: GroupState, n: number): void {
    const t = this.#telemetry;
    s.counters.pollsMissed += n;
    this.#lastMissAtMs = this.#opts.clock.monotonic();
    t.emit(POLL_MISSED, { group: s.group.name, slots: n }, { labels: { protocol: s.group.scheme }, n });
    t.begin(COLLECTOR_LATE, "scheduler", { group: s.group.name, slots: n });
  }

  #slot(s: GroupState): void {
    if (!this.#running) return;
    const t = this.#telemetry;
    const now = this.#opts.clock.monotonic();
    if (now - this.#lastMissAtMs >= BEHIND_QUIET_MS && t.isActive(COLLECTOR_LATE, "scheduler")) {
      t.end(COLLECTOR_LATE, "scheduler", {
        missed_total: this.#states.reduce((sum, g) => sum + g.counters.pollsMissed, 0),
      });
    }
    if (s.inFlight) {
      s.counters.pollsSkipped++;
      s.lastSkipAtMs = now;
      t.emit(POLL_SKIPPED, { group: s.group.name }, { labels: { protocol: s.group.scheme } });
      t.begin(DEVICE_BEHIND, s.group.name, { group: s.group.name, timeout_ms: s.timeoutMs });
    } else {
      // A device steadily slower than its period alternates skipped and polled slots: it is back
      // on schedule only after a quiet spell, so the condition is not logged at every other slot.
      if (now - s.lastSkipAtMs >= BEHIND_QUIET_MS) {
        t.end(DEVICE_BEHIND, s.group.name, { group: s.group.name, skipped_total: s.counters.pollsSkipped });
      }
      this.#launch(s);
    }
    this.#arm(s);
  }

  #launch(s: GroupState): void {
    s.inFlight = this.#poll(s).finally(() => {
      s.inFlight = undefined;
    });
  }

  async #poll(s: GroupState): Promise<void> {
    const { clock } = this.#opts;
    const isActive = this.#opts.isActive ?? ((e: MetricEntry) => !e.optional);
    const entries = s.group.entries.filter(isActive);
    if (entries.length === 0) return;
    const abort = new AbortController();
    s.abort = abort;
    const sentAtMs = clock.now();
    let result: PollResult;
    const taking = new PollTaking(sentAtMs);
    // A part handed over after the timeout (before the source noticed it) is not taken.
    const handOver = (readings: Reading[]) =>
      abort.signal.aborted ? Promise.reject(abort.signal.reason) : this.#take(s, taking, readings, true);
    // The group stays busy until the source itself has settled, even past the timeout.
    const polling = s.source.poll(entries, abort.signal, handOver);
    const settled = polling.then(() => {}, () => {});
    try {
      const message = `Poll of ${s.group.name} timed out after ${s.timeoutMs} ms`;
      result = await deadline(polling, { ms: s.timeoutMs, message, clock });
    } catch (err) {
      // Past its timeout, the source is told to stop.
      if (err instanceof DeadlineError) abort.abort(err);
      const message = errorMessage(err);
      s.counters.pollsFailed++;
      this.#telemetry.emit(POLL_FAILED, { group: s.group.name, error: message }, {
        labels: { protocol: s.group.scheme },
      });
      this.#telemetry.begin(DEVICE_FAILING, s.group.name, { group: s.group.name, error: message }, message);
      // What was handed over in time is a reading of the device like any other.
      this.#deliverHeld(s, taking);
      this.#recordDevices(s, entries, sentAtMs, message, new Map());
      await settled;
      return;
    } finally {
      s.abort = undefined;
    }
    const t = this.#telemetry;
    const protocol = { labels: { protocol: s.group.scheme } };
    s.counters.pollsOk++;
    t.emit(POLL_OK, { group: s.group.name }, protocol);
    t.end(DEVICE_FAILING, s.group.name, { group: s.group.name });
    // What the source did not hand over during the poll: no need to wait for the spool after it.
    await this.#take(s, taking, result.readings, false);
    result.errors.push(...taking.refused);
    const entryErrors = this.#entryErrors(s, result);
    this.#recordDevices(s, entries, sentAtMs, undefined, entryErrors);
  }

  /**
   * Turns a part of a poll's readings into samples and hands them to the spool, in parts, one per
   * time slice, so the timers of other groups fire on time meanwhile (each part is acknowledged on
   * its own). With `paced` (a part handed over while the source reads on), the samples are held
   * back until there are POLL_HELD_MAX, then handed over together, and the promise resolves once
   * the spool has stored them: the source reads on at the pace the spool stores.
   */
  async #take(s: GroupState, taking: PollTaking, readings: Reading[], paced: boolean): Promise<void> {
    taking.door ??= new PollSamples(taking.sentAtMs, this.#opts.clock.now(), s.identities);
    const door = taking.door;
    // A slice of its own: counted from the poll's start, the slice would be spent at once, and a
    // poll's last samples would reach the spool in several commits instead of one.
    const slice = new TimeSlice();
    if (!paced) this.#deliverHeld(s, taking);
    for (let from = 0; from < readings.length;) {
      let to = Math.min(readings.length, from + READINGS_BETWEEN_LOOKS);
      const part: PollPart = { samples: [], known: { series: [], values: [] }, refused: [] };
      door.take(readings, from, to, part);
      while (to < readings.length && !slice.due() && partSize(part) < PART_MAX_SAMPLES) {
        door.take(readings, to, to = Math.min(readings.length, to + READINGS_BETWEEN_LOOKS), part);
      }
      // What became samples is let go at once: a poll does not hold all its readings to the end.
      (readings as (Reading | undefined)[]).fill(undefined, from, to);
      from = to;
      taking.refused.push(...part.refused);
      const batches: SampleBatch[] = [];
      if (part.known && part.known.series.length > 0) {
        batches.push({ timestampMs: taking.sentAtMs, series: part.known.series, values: part.known.values });
      }
      if (part.samples.length > 0) batches.push(part.samples);
      for (const batch of batches) {
        if (paced) {
          taking.held.push(batch);
          taking.heldSamples += batchSize(batch);
          if (Array.isArray(batch)) { for (const sample of batch) if (!sample.series) taking.heldUncached++; }
        } else this.#deliver(s, batch);
      }
      if (from < readings.length && slice.due()) await slice.yield();
    }
    const full = taking.heldSamples >= POLL_HELD_MAX || taking.heldUncached >= POLL_HELD_UNCACHED_MAX;
    if (paced && full) await this.#deliverHeld(s, taking);
  }

  /** Hands the samples a poll held back to the spool; resolves once they are stored (or lost). */
  #deliverHeld(s: GroupState, taking: PollTaking): Promise<unknown> {
    const stored = Promise.all(taking.held.map((samples) => this.#deliver(s, samples)));
    taking.held = [];
    taking.heldSamples = 0;
    taking.heldUncached = 0;
    return stored;
  }

  /**
   * Hands one part of a poll's samples to the spool, and counts what becomes of them; the promise
   * resolves when the spool has stored them or failed to.
   */
  #deliver(s: GroupState, samples: SampleBatch): Promise<void> {
    const t = this.#telemetry;
    const n = batchSize(samples);
    s.counters.samples += n;
    t.emit(SAMPLES_POLLED, { group: s.group.name, samples: n }, {
      labels: { protocol: s.group.scheme },
      n,
    });
    const delivery = this.#opts.deliver(samples).then(
      () => {
        s.counters.samplesAcknowledged += n;
        if (t.isActive(SPOOL_WRITE_FAILING, "spool")) {
          t.end(SPOOL_WRITE_FAILING, "spool", { lost_total: t.total(SAMPLES_LOST.counter) });
        }
      },
      (err) => {
        s.counters.samplesLost += n;
        const fields = { group: s.group.name, samples: n, error: errorMessage(err) };
        t.emit(SAMPLES_LOST, fields, { n });
        t.begin(SPOOL_WRITE_FAILING, "spool", fields);
      },
    );
    this.#deliveries.add(delivery);
    delivery.finally(() => this.#deliveries.delete(delivery));
    return delivery;
  }

  /** Logs per-entry errors when they start and end; returns device id → first error. */
  #entryErrors(s: GroupState, result: PollResult): Map<string, string> {
    const t = this.#telemetry;
    const now = new Set<string>();
    const byDevice = new Map<string, string>();
    for (const e of result.errors) {
      const key = `${e.entry.file}:${e.entry.line}${e.subject === undefined ? "" : ` ${e.subject}`}`;
      const first = !now.has(key);
      now.add(key);
      if (!byDevice.has(e.entry.deviceId)) byDevice.set(e.entry.deviceId, e.message);
      s.counters.entryErrors++;
      const fields = {
        group: s.group.name,
        metric: e.entry.name,
        device: e.entry.deviceId,
        entry: key,
        error: e.message,
      };
      t.emit(ENTRY_ERROR, fields, { labels: { protocol: s.group.scheme } });
      if (first) t.begin(ENTRY_FAILING, key, fields, e.message);
    }
    for (const key of s.failingEntries) {
      if (!now.has(key)) t.end(ENTRY_FAILING, key, { group: s.group.name, entry: key });
    }
    s.failingEntries = now;
    return byDevice;
  }

  #recordDevices(
    s: GroupState,
    entries: readonly MetricEntry[],
    atMs: number,
    groupError: string | undefined,
    entryErrors: Map<string, string>,
  ): void {
    for (const e of entries) {
      let d = s.devices.get(e.deviceId);
      if (!d) {
        d = new DeviceState(e.deviceId, s.group.name);
        s.devices.set(e.deviceId, d);
      }
      if (d.lastPollAtMs === atMs) continue;
      const error = groupError ?? entryErrors.get(e.deviceId);
      d.lastPollAtMs = atMs;
      d.lastError = error;
      if (groupError === undefined) {
        d.lastOkAtMs = atMs;
        d.pollsOk = s.counters.pollsOk;
      }
      d.pollsFailed = s.counters.pollsFailed;
      d.pollsSkipped = s.counters.pollsSkipped;
    }
  }
}

/**
 * Builds the stored sample of a reading: Kwollect's value rules, labels, timestamp. With
 * `identities`, a reading that names its series (`seriesKey`) shares its series' identity.
 */
export function toSample(r: Reading, sentAtMs: number, identities?: SeriesIdentities): Sample {
  const scale = r.entry.scaleFactor;
  let value: number;
  let valueStr: string | undefined;
  if (typeof r.value === "number") value = scale ? r.value * scale : r.value;
  else ({ value, valueStr } = toSampleValue(r.value, scale));
  const timestampMs = r.timestampMs ?? sentAtMs;
  const series = identities && r.seriesKey !== undefined && valueStr === undefined
    ? identities.of(r.entry, r.seriesKey, r.metricId ?? r.entry.name, r.labels)
    : undefined;
  if (series) return identitySample(series, timestampMs, value);
  const labels = { ...r.labels, ...r.entry.labels };
  if (valueStr !== undefined) labels.value_str = valueStr;
  return { timestampMs, deviceId: r.entry.deviceId, metricId: r.metricId ?? r.entry.name, value, labels };
}

/** The sample of a series that has an identity: its device, metric and labels are the identity's. */
function identitySample(series: SeriesIdentity, timestampMs: number, value: number): Sample {
  return { timestampMs, deviceId: series.deviceId, metricId: series.metricId, value, labels: series.labels, series };
}

/**
 * One part of a poll as the door makes it: samples as objects, and those of series with an identity
 * at the poll's time as columns (`known`: no object per sample, see `SeriesSamples`), which the
 * spool stores the same way. Without `known`, every sample is an object, in the readings' order.
 */
export interface PollPart {
  samples: Sample[];
  known: { series: SeriesIdentity[]; values: number[] } | undefined;
  refused: EntryError[];
}

function partSize(part: PollPart): number {
  return part.samples.length + (part.known?.series.length ?? 0);
}

/**
 * The samples of one poll: one per (device, metric, labels, timestamp), the first reading's when
 * entries of the group selected the same value twice. This is also the door of the spool: a
 * reading that could never be stored centrally (sample.ts) is refused as an error of its entry,
 * named by its metric, and never becomes a sample. A large poll goes through in parts (`take`),
 * one per time slice; the duplicates are found across all of them: a sample with a series identity
 * at the poll's time by the poll's stamp on it (`seenInPoll`, one object per series and group,
 * src/collect/series_identity.ts), any other by its key in a set (device, metric, labels, and its
 * timestamp when the device gave one), the two looked up in each other.
 */
export class PollSamples {
  #sentAtMs: number;
  #nowMs: number;
  #identities: SeriesIdentities | undefined;
  /** The stamp of this poll on the identities of its samples. */
  #poll: number;
  /** Keys of the samples without an identity, or with a timestamp of their own. */
  #seen = new Set<string>();
  /** Whether a sample at the poll's time passes `sampleProblem`'s timestamp checks (one look per poll). */
  #pollTimeOk: boolean;

  constructor(sentAtMs: number, nowMs: number, identities?: SeriesIdentities) {
    this.#sentAtMs = sentAtMs;
    this.#nowMs = nowMs;
    this.#identities = identities;
    identities?.nextPoll();
    this.#poll = identities?.poll ?? -1;
    this.#pollTimeOk = Number.isFinite(sentAtMs) && timestampProblem(sentAtMs, "milliseconds", nowMs) === undefined;
  }

  /** Adds the samples of `readings[from]` up to (not including) `readings[to]` to `part`. */
  take(readings: readonly Reading[], from: number, to: number, part: PollPart): void {
    const { samples, refused, known } = part;
    const identities = this.#identities;
    for (let i = from; i < to; i++) {
      const r = readings[i]!;
      let s: Sample;
      // A known series' numeric sample at the poll's time: checked by its identity, kept as columns.
      if (identities && r.seriesKey !== undefined && r.timestampMs === undefined && typeof r.value === "number") {
        const series = identities.of(r.entry, r.seriesKey, r.metricId ?? r.entry.name, r.labels);
        if (series) {
          const scale = r.entry.scaleFactor;
          const value = scale ? r.value * scale : r.value;
          if (known && series.problem === undefined && this.#pollTimeOk) {
            if (this.#seenSeries(series)) continue;
            known.series.push(series);
            known.values.push(value);
            continue;
          }
          s = identitySample(series, this.#sentAtMs, value);
        } else s = toSample(r, this.#sentAtMs);
      } else s = toSample(r, this.#sentAtMs, identities);
      if (this.#seenBefore(s)) continue;
      const problem = sampleProblem(s, this.#nowMs);
      if (problem === undefined) samples.push(s);
      else {refused.push({
          entry: r.entry,
          subject: s.metricId,
          message: `Sample of ${s.metricId} refused: ${problem}`,
        });}
    }
  }

  /** Whether the poll took a sample of the series of `s` at its time already; marks it taken. */
  #seenBefore(s: Sample): boolean {
    const seen = this.#seen;
    const series = s.series;
    if (s.timestampMs !== this.#sentAtMs) {
      const key = `${s.deviceId}\u0000${s.metricId}\u0000${s.timestampMs}\u0000${canonicalLabels(s.labels)}`;
      if (seen.has(key)) return true;
      seen.add(key);
      return false;
    }
    if (series) return this.#seenSeries(series);
    const key = pollKeyOf(s.deviceId, s.metricId, s.labels);
    if (seen.has(key) || this.#identities?.byPollKey(key)?.seenInPoll === this.#poll) return true;
    seen.add(key);
    return false;
  }

  /** Whether the poll took a sample of `series` at its time already; marks it taken. */
  #seenSeries(series: SeriesIdentity): boolean {
    // Another entry's sample of it without an identity was keyed by the same text (pollKeyOf).
    if (series.seenInPoll === this.#poll || (this.#seen.size > 0 && this.#seen.has(series.pollKey))) return true;
    series.seenInPoll = this.#poll;
    return false;
  }
}

/** The samples of a whole poll at once (see PollSamples). */
export function samplesOfPoll(
  readings: readonly Reading[],
  sentAtMs: number,
  nowMs: number,
  identities?: SeriesIdentities,
): { samples: Sample[]; refused: EntryError[] } {
  const part: PollPart = { samples: [], known: undefined, refused: [] };
  new PollSamples(sentAtMs, nowMs, identities).take(readings, 0, readings.length, part);
  return { samples: part.samples, refused: part.refused };
}

/**
 * Offset of a group's slots in its period (ms, a multiple of PHASE_STEP_MS below the period): slot
 * k falls at phase + k × period, wall clock.
 */
export function phaseOf(key: string, periodMs: number): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  const steps = Math.max(1, Math.floor(periodMs / PHASE_STEP_MS));
  return ((h >>> 0) % steps) * PHASE_STEP_MS;
}
