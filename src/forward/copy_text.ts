import type { Sample } from "../sample.ts";

/**
 * Encodes samples as PostgreSQL COPY text rows for
 * `metrics (device_id, metric_id, labels, "timestamp", value)`: microsecond UTC
 * timestamps, NaN/±Infinity spelled as PostgreSQL reads them, and the COPY escapes for backslash,
 * tab, newline and carriage return. The series comes first, so a row is its series' prefix
 * (`copyPrefix`, rendered once per series by the spool's lease) followed by two numbers.
 *
 * `CopyEncoder` writes the rows of a batch as UTF-8 bytes straight into chunks of about
 * COPY_CHUNK_BYTES: no string per row, and nothing left for the client to encode (measured with
 * `deno run --cpu-prof`: the rows as strings, joined and then encoded by the client, were a fifth
 * of the forwarder's time and most of its garbage). Its timestamps are written digit by digit
 * after their minute's text, rendered once per minute: a backlog's rows grouped by series each
 * have a timestamp of their own, and rendering each (a `Date`, its ISO string, then its bytes)
 * was a quarter of the collector's CPU during a drain (docs/PERFORMANCE.md, `drain3`).
 * `copyRow` gives the same row as text.
 */

/** COPY data is handed to the client in chunks of about this many bytes. */
export const COPY_CHUNK_BYTES = 65_536;
/** The longest timestamp text (an extended year: "+275760-09-13T00:00:00.000000+00"). */
const TIMESTAMP_BYTES_MAX = 40;

const utf8 = new TextEncoder();

/**
 * Chunks of batches already sent, kept for the next ones (at most SPARE_CHUNKS): the bytes of a
 * batch live outside V8's heap and are freed only when a collection finds their owner dead, so
 * without reuse they piled up between collections (the hostile bench's peak RSS, see
 * docs/PERFORMANCE.md).
 */
const spare: Uint8Array[] = [];
const SPARE_CHUNKS = 64;

/**
 * Gives back the chunks of a `CopyEncoder` once nothing reads them any more (the COPY that
 * carried them has ended, either way). Each chunk is given back once.
 */
export function recycleCopyChunks(chunks: readonly Uint8Array[]): void {
  for (const chunk of chunks) {
    if (chunk.buffer.byteLength !== COPY_CHUNK_BYTES || spare.length >= SPARE_CHUNKS) continue;
    spare.push(new Uint8Array(chunk.buffer, 0, COPY_CHUNK_BYTES));
  }
}

/** The start of the COPY rows of a series: device, metric and labels (JSON text), each followed by a tab. */
export function copyPrefix(deviceId: string, metricId: string, labelsJson: string): string {
  return `${escape(deviceId)}\t${escape(metricId)}\t${escape(labelsJson)}\t`;
}

/** The device, metric and labels (JSON text) of a series, from its prefix (the inverse of `copyPrefix`). */
export function copyPrefixParts(prefix: string): { deviceId: string; metricId: string; labelsJson: string } {
  // Escaped, the three texts hold no tab: the prefix's tabs are the separators.
  const [deviceId, metricId, labelsJson] = prefix.split("\t");
  return { deviceId: unescape(deviceId!), metricId: unescape(metricId!), labelsJson: unescape(labelsJson!) };
}

/** The COPY row of a sample, as text. */
export function copyRow(s: Sample): string {
  const prefix = copyPrefix(s.deviceId, s.metricId, JSON.stringify(s.labels));
  return `${prefix}${copyTimestamp(s.timestampMs)}\t${copyFloat(s.value)}\n`;
}

/** The COPY rows of a batch, as UTF-8 bytes in chunks. */
export class CopyEncoder {
  #chunks: Uint8Array[] = [];
  #buf = spare.pop() ?? new Uint8Array(COPY_CHUNK_BYTES);
  #at = 0;
  /** The first microsecond of the minute of the last timestamp encoded, and that minute's text ("2026-09-21T14:13:"). */
  #minuteUs = NaN;
  #minuteText = new Uint8Array(0);
  /**
   * The last timestamp written (µs), and where its text is: the rows of one poll share their
   * timestamp, copied from there. The chunk holding it is this encoder's until `finish`.
   */
  #lastUs = NaN;
  #lastChunk: Uint8Array = new Uint8Array(0);
  #lastAt = 0;
  #lastLength = 0;

  /**
   * Appends the row of a sample of the series whose prefix (`copyPrefix`) is `prefix`. The prefix
   * stays a string (a byte array per series cost more memory than the copy below costs time).
   */
  row(prefix: string, timestampMs: number, value: number): void {
    const v = copyFloat(value);
    // At most 3 UTF-8 bytes per UTF-16 unit of the prefix; the timestamp's and the value's text
    // are ASCII (digits, sign, '.', 'e', ':', '-', 'T', NaN, Infinity): one byte per character.
    const need = prefix.length * 3 + TIMESTAMP_BYTES_MAX + v.length + 2;
    if (this.#at + need > this.#buf.length) this.#next(need);
    const buf = this.#buf;
    let at = this.#at;
    for (let i = 0; i < prefix.length; i++) {
      const c = prefix.charCodeAt(i);
      if (c >= 0x80) {
        at = this.#at + utf8.encodeInto(prefix, buf.subarray(this.#at)).written;
        break;
      }
      buf[at++] = c;
    }
    at = this.#timestamp(buf, at, timestampMs);
    buf[at++] = 9; // \t
    for (let i = 0; i < v.length; i++) buf[at++] = v.charCodeAt(i);
    buf[at++] = 10; // \n
    this.#at = at;
  }

  /** Writes the text of `copyTimestamp(timestampMs)` at `at`; returns where it ends. */
  #timestamp(buf: Uint8Array, at: number, timestampMs: number): number {
    const us = Math.round(timestampMs * 1000);
    if (us === this.#lastUs) {
      const from = this.#lastChunk;
      const end = this.#lastAt + this.#lastLength;
      for (let i = this.#lastAt; i < end; i++) buf[at++] = from[i]!;
      return at;
    }
    const end = this.#timestampText(buf, at, us, timestampMs);
    this.#lastUs = us;
    this.#lastChunk = buf;
    this.#lastAt = at;
    this.#lastLength = end - at;
    return end;
  }

  /** Renders the text of `us` (`timestampMs` in µs) at `at`; returns where it ends. */
  #timestampText(buf: Uint8Array, at: number, us: number, timestampMs: number): number {
    if (!Number.isSafeInteger(us)) {
      // Beyond year 2255 (or before 1685): rare and rejected centrally anyway, rendered as text.
      const text = copyTimestamp(timestampMs);
      for (let i = 0; i < text.length; i++) buf[at++] = text.charCodeAt(i);
      return at;
    }
    let inMinute = us - this.#minuteUs;
    if (!(inMinute >= 0 && inMinute < 60_000_000)) {
      this.#minuteUs = Math.floor(us / 60_000_000) * 60_000_000;
      // "2026-09-21T14:13:00.000Z" without its seconds: "2026-09-21T14:13:".
      this.#minuteText = utf8.encode(new Date(this.#minuteUs / 1000).toISOString().slice(0, -7));
      inMinute = us - this.#minuteUs;
    }
    const minute = this.#minuteText;
    for (let i = 0; i < minute.length; i++) buf[at++] = minute[i]!;
    const seconds = Math.floor(inMinute / 1_000_000);
    let micros = inMinute - seconds * 1_000_000;
    buf[at++] = 48 + Math.floor(seconds / 10);
    buf[at++] = 48 + seconds % 10;
    buf[at++] = 46; // .
    for (let i = at + 5; i >= at; i--) {
      buf[i] = 48 + micros % 10;
      micros = Math.floor(micros / 10);
    }
    at += 6;
    buf[at++] = 43; // +
    buf[at++] = 48;
    buf[at++] = 48;
    return at;
  }

  /** The chunks written; the encoder is not used after. */
  finish(): Uint8Array[] {
    if (this.#at > 0) this.#chunks.push(this.#buf.subarray(0, this.#at));
    this.#at = 0;
    return this.#chunks;
  }

  /** Closes the current chunk and starts one that holds at least `need` bytes. */
  #next(need: number): void {
    if (this.#at > 0) this.#chunks.push(this.#buf.subarray(0, this.#at));
    this.#buf = need <= COPY_CHUNK_BYTES ? spare.pop() ?? new Uint8Array(COPY_CHUNK_BYTES) : new Uint8Array(need);
    this.#at = 0;
  }
}

/** The last timestamp encoded as text (the samples of one poll share theirs). */
let lastMs = NaN;
let lastText = "";

export function copyTimestamp(ms: number): string {
  if (ms === lastMs) return lastText;
  const us = Math.round(ms * 1000);
  const wholeMs = Math.floor(us / 1000);
  const iso = new Date(wholeMs).toISOString(); // 2026-11-25T01:02:03.456Z
  const micro = String(us - wholeMs * 1000).padStart(3, "0");
  lastMs = ms;
  lastText = `${iso.slice(0, -1)}${micro}+00`;
  return lastText;
}

export function copyFloat(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "Infinity";
  if (v === -Infinity) return "-Infinity";
  return String(v);
}

function escape(text: string): string {
  if (!/[\\\t\n\r]/.test(text)) return text;
  return text.replace(/[\\\t\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r"));
}

function unescape(text: string): string {
  if (!text.includes("\\")) return text;
  return text.replace(/\\[\\tnr]/g, (c) => (c === "\\\\" ? "\\" : c === "\\t" ? "\t" : c === "\\n" ? "\n" : "\r"));
}
