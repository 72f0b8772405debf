/**
 * The one sample type every stage passes on: sources produce it, the spool stores it, the
 * forwarder writes it to the central `metrics` table.
 *
 * Guarantee: a sample that reaches the spool can be written centrally. Producers check it with
 * `sampleProblem()` where they make it (the scheduler for polled readings, the wattmeter reader
 * for its lines), so a device that sends an unrepresentable timestamp or text fails alone, with
 * an error that names it, instead of a batch that the central database refuses for ever. The
 * bounds are fixed and documented in docs/OPERATIONS.md:
 *
 * - timestamp from 2000-01-01T00:00:00Z to one year after the collector's clock (a factor-1000
 *   unit mistake, seconds for milliseconds or nanoseconds for microseconds, always falls
 *   outside, and the error names the unit the value looks like);
 * - device_id and metric_id of 1 to MAX_ID_CHARS characters; labels a JSON object of at most
 *   MAX_LABELS_JSON_CHARS characters; no NUL character anywhere (PostgreSQL's text and jsonb
 *   refuse it). NaN and ±Infinity values are allowed.
 */
export interface Sample {
  /** Milliseconds since the Unix epoch; fractions keep sub-millisecond precision. */
  timestampMs: number;
  deviceId: string;
  metricId: string;
  /** NaN is allowed (a missing or non-numeric reading). */
  value: number;
  labels: Labels;
  /**
   * What this sample shares with every other sample of its series, when its producer computed it
   * once for the series (src/collect/series_identity.ts); `labels` is then the identity's object,
   * shared and never modified.
   */
  series?: SeriesIdentity;
}

export type Labels = Record<string, unknown>;

/**
 * A series as computed once, for every sample of it: its labels as JSON, its keys, and whether the
 * central database could store it (the checks of ids and labels in `sampleProblem`). Immutable,
 * but for `spool`, which the spool writer owns (src/spool/writer.ts).
 */
export interface SeriesIdentity {
  readonly deviceId: string;
  readonly metricId: string;
  readonly labels: Labels;
  /**
   * device, metric and labels JSON joined by NUL: the spool's key of the series (the labels' JSON,
   * which the dictionary stores, is its text after the second NUL: not kept apart, 40 bytes a series).
   */
  readonly key: string;
  /** The same with the labels in key order: one sample per series and poll (scheduler.ts). */
  readonly pollKey: string;
  /** Why no sample of the series can be stored, or undefined when they can. */
  readonly problem: string | undefined;
  /** The spool writer's record of this series: the writer it belongs to, its id and last seq there. */
  spool?: { readonly writer: object; readonly id: number; lastSeq: number };
  /**
   * The last poll of its group that took a sample of it at the poll's time: the per-poll duplicate
   * check (scheduler.ts `PollSamples`) is this stamp, exact because a group's identities of one
   * `pollKey` are one object (src/collect/series_identity.ts).
   */
  seenInPoll: number;
}

/**
 * Samples of series that have an identity, all taken at one timestamp, as columns: what a poll of
 * known series hands the spool without an object per sample (about 65 bytes of heap each, kept
 * until the spool's commit, so copied by the young generation's collections). Sample `i` is
 * (`series[i]`, `values[i]` at `timestampMs`); each passed `sampleProblem` where it was made.
 * `values` holds numbers only, so V8 keeps them unboxed.
 */
export interface SeriesSamples {
  readonly timestampMs: number;
  readonly series: SeriesIdentity[];
  readonly values: number[];
}

/** What a producer hands the spool: samples as objects, or samples of known series as columns. */
export type SampleBatch = Sample[] | SeriesSamples;

/** The number of samples in `batch`. */
export function batchSize(batch: SampleBatch): number {
  return Array.isArray(batch) ? batch.length : batch.series.length;
}

/** The samples of `batch` as objects (a column batch's share their identity's labels). */
export function samplesOf(batch: SampleBatch): Sample[] {
  if (Array.isArray(batch)) return batch;
  const { timestampMs, series, values } = batch;
  return series.map((s, i) => ({
    timestampMs,
    deviceId: s.deviceId,
    metricId: s.metricId,
    value: values[i]!,
    labels: s.labels,
    series: s,
  }));
}

/** Earliest timestamp a sample may carry: 2000-01-01T00:00:00Z. */
export const EARLIEST_TIMESTAMP_MS = Date.UTC(2000, 0, 1);
/** How far after the collector's clock a sample's timestamp may be. */
export const LATEST_AHEAD_MS = 366 * 86_400_000;
/** Longest device_id or metric_id (PostgreSQL's btree index rows hold about 2,700 bytes). */
export const MAX_ID_CHARS = 512;
/** Longest labels object, as JSON text. */
export const MAX_LABELS_JSON_CHARS = 16_384;

const UNITS = ["seconds", "milliseconds", "microseconds", "nanoseconds"] as const;
export type TimeUnit = (typeof UNITS)[number];

/**
 * Why a timestamp read from a device cannot be stored, or undefined when it can. `raw` is the
 * number as the device sent it, in `unit` since the Unix epoch; the message quotes it and, when
 * the value is off by a factor of 1000, 10^6 or 10^9, names the unit it looks like.
 */
export function timestampProblem(raw: number, unit: TimeUnit, nowMs: number): string | undefined {
  const index = UNITS.indexOf(unit);
  const ms = raw * 1000 ** (1 - index);
  const latest = nowMs + LATEST_AHEAD_MS;
  if (ms >= EARLIEST_TIMESTAMP_MS && ms <= latest) return undefined;
  const range = `${isoDay(EARLIEST_TIMESTAMP_MS)} to ${isoDay(latest)}`;
  let guess = "";
  for (let i = 0; i < UNITS.length; i++) {
    const asMs = raw * 1000 ** (1 - i);
    if (i !== index && asMs >= EARLIEST_TIMESTAMP_MS && asMs <= latest) {
      guess = `: it looks like ${UNITS[i]} (${isoDay(asMs)}), not ${unit}`;
    }
  }
  const when = Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : "out of any calendar";
  return `Timestamp ${raw} (${unit} since the epoch) is ${when}, outside the accepted ${range}${guess}`;
}

/**
 * Why `s` cannot be stored and forwarded, or undefined when it can (see the module header).
 * `series`: the checks of its series made once for all its samples (`seriesProblem`), when known.
 */
export function sampleProblem(
  s: Sample,
  nowMs: number,
  series: { readonly problem: string | undefined } | undefined = s.series,
): string | undefined {
  return readingProblem(s.timestampMs, s.value, nowMs) ??
    (series ? series.problem : seriesProblem(s.deviceId, s.metricId, s.labels).problem);
}

/** Why a sample's timestamp (ms) or value cannot be stored, or undefined when they can (`sampleProblem` without its series). */
export function readingProblem(timestampMs: number, value: number, nowMs: number): string | undefined {
  if (typeof timestampMs !== "number" || !Number.isFinite(timestampMs)) {
    return `Timestamp ${String(timestampMs)} is not a number`;
  }
  // The common case first, without the arithmetic of timestampProblem's units (heap numbers).
  if (timestampMs < EARLIEST_TIMESTAMP_MS || timestampMs > nowMs + LATEST_AHEAD_MS) {
    const ts = timestampProblem(timestampMs, "milliseconds", nowMs);
    if (ts) return ts;
  }
  if (typeof value !== "number") return `Value ${String(value)} is not a number`;
  return undefined;
}

/**
 * Why no sample of the series (device, metric, labels) can be stored, or undefined when they can;
 * with the labels as JSON when they can be written as JSON.
 */
export function seriesProblem(
  deviceId: string,
  metricId: string,
  labels: Labels,
): { problem: string | undefined; json?: string } {
  for (const [what, id] of [["device_id", deviceId], ["metric_id", metricId]] as const) {
    if (typeof id !== "string" || id.length === 0 || id.length > MAX_ID_CHARS) {
      return { problem: `Invalid ${what} '${String(id).slice(0, 80)}': expected 1 to ${MAX_ID_CHARS} characters` };
    }
    if (id.includes("\0")) return { problem: `Invalid ${what} '${id.slice(0, 80)}': it contains a NUL character` };
  }
  let json: string;
  try {
    json = JSON.stringify(labels);
  } catch (err) {
    return { problem: `Labels cannot be written as JSON: ${(err as Error).message}` };
  }
  if (typeof json !== "string" || !json.startsWith("{")) return { problem: `Labels ${json} are not a JSON object` };
  if (json.length > MAX_LABELS_JSON_CHARS) {
    return {
      problem: `Labels are ${json.length} characters of JSON, more than the ${MAX_LABELS_JSON_CHARS} accepted`,
      json,
    };
  }
  if (json.includes("\\u0000")) return { problem: `Labels ${json.slice(0, 80)} contain a NUL character`, json };
  return { problem: undefined, json };
}

function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** A raw reading as a device returned it, before `scale_factor` and text handling. */
export type RawValue = number | bigint | string | boolean;

/**
 * Converts a raw reading to a sample value the way Kwollect does: numbers and numeric text are
 * scaled by `scaleFactor` (0 or absent means no scaling); any other text is stored as NaN with
 * the text in label `value_str`.
 */
export function toSampleValue(
  raw: RawValue,
  scaleFactor: number | undefined,
): { value: number; valueStr?: string } {
  let value: number;
  if (typeof raw === "number") value = raw;
  else if (typeof raw === "bigint") value = Number(raw);
  else if (typeof raw === "boolean") value = raw ? 1 : 0;
  else {
    const text = raw.trim();
    value = parseNumber(text);
    if (Number.isNaN(value)) return { value: NaN, valueStr: raw };
  }
  if (scaleFactor) value *= scaleFactor;
  return { value };
}

/** Parses a decimal or Prometheus-style float ("NaN", "+Inf", "-Inf"); NaN when it is not one. */
export function parseNumber(text: string): number {
  if (text === "") return NaN;
  switch (text) {
    case "NaN":
      return NaN;
    case "+Inf":
    case "Inf":
    case "inf":
    case "+inf":
      return Infinity;
    case "-Inf":
    case "-inf":
      return -Infinity;
  }
  return isDecimal(text) ? Number(text) : NaN;
}

/**
 * `parseNumber(text.slice(start, end))` without the slice, for the common plain decimal
 * (`[+-]?\d+(\.\d*)?` with at most 15 digits); undefined for any other text, left to parseNumber.
 * Exact: its digits make an integer below 2^53 and a division by 10^k (k ≤ 15), both exact in a
 * float64, so the quotient is rounded once, as `Number()` rounds the decimal.
 */
export function plainDecimalAt(text: string, start: number, end: number): number | undefined {
  let i = start;
  let c = text.charCodeAt(i);
  const negative = c === MINUS;
  if (negative || c === PLUS) c = text.charCodeAt(++i);
  let mantissa = 0;
  let digits = 0;
  let fraction = -1;
  for (; i < end; c = text.charCodeAt(++i)) {
    if (c >= ZERO && c <= NINE) {
      mantissa = mantissa * 10 + (c - ZERO);
      digits++;
    } else if (c === DOT && fraction < 0 && digits > 0) fraction = digits;
    else return undefined;
  }
  if (digits === 0 || digits > 15) return undefined;
  const value = fraction < 0 ? mantissa : mantissa / POWERS_OF_TEN[digits - fraction]!;
  return negative ? -value : value;
}

/** 10^0 to 10^15, each made by exact multiplications. */
const POWERS_OF_TEN = Array.from({ length: 16 }, (_, k) => k).map((k) => {
  let p = 1;
  for (let i = 0; i < k; i++) p *= 10;
  return p;
});

/**
 * Whether `text` is a decimal number as Kwollect reads them: [+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?
 * (no hexadecimal, no blanks, no `Infinity`, which `Number()` would take). A loop over the
 * characters instead of a regular expression: it runs for every sample of every exporter.
 */
function isDecimal(text: string): boolean {
  let i = 0;
  let c = text.charCodeAt(0);
  if (c === PLUS || c === MINUS) c = text.charCodeAt(++i);
  let digits = 0;
  for (; c >= ZERO && c <= NINE; digits++) c = text.charCodeAt(++i);
  if (c === DOT) {
    c = text.charCodeAt(++i);
    for (; c >= ZERO && c <= NINE; digits++) c = text.charCodeAt(++i);
  }
  if (digits === 0) return false;
  if (c === 0x65 || c === 0x45) { // e, E
    c = text.charCodeAt(++i);
    if (c === PLUS || c === MINUS) c = text.charCodeAt(++i);
    let exponent = 0;
    for (; c >= ZERO && c <= NINE; exponent++) c = text.charCodeAt(++i);
    if (exponent === 0) return false;
  }
  return i === text.length;
}

const PLUS = 0x2b;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
