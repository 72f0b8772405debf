import { parseNumber, plainDecimalAt } from "../../sample.ts";
import { BoundedCache, ownCopy } from "../../bounded_cache.ts";

/** A malformed line, with its number and the reason; it does not stop the parse. */
export interface LineError {
  line: number;
  message: string;
}

/**
 * Where the parser hands each sample and each malformed line, in the order of the text. A sample
 * is its series (shared by every sample of it: never modified), its value, the exposition
 * timestamp in ms when the line has one, and its line number: arguments, not an object per line.
 */
export interface ParseSink {
  /** `cached`: the series is kept in the parser's `known` set (SeriesTexts), not made for this line alone. */
  sample(series: KnownSeries, value: number, timestampMs: number | undefined, line: number, cached: boolean): void;
  error(e: LineError): void;
}

/**
 * Longest line the parser holds while waiting for its end, in characters. A longer line is
 * reported as malformed and skipped as it streams by, so an exporter that never sends a newline
 * costs this much memory, not its whole body. Real lines are far shorter (a sample with a dozen
 * labels is a few hundred characters).
 */
export const MAX_LINE_CHARS = 65_536;

/** An exporter with more series than this many times its cache's capacity is not cached (SeriesTexts). */
const SPARSE_FACTOR = 2;
const HASH = 0x23;
const OPEN_BRACE = 0x7b;
const SPACE = 0x20;
const TAB = 0x09;
const LABEL_NAME_RE = /[a-zA-Z_][a-zA-Z0-9_]*/y;

/** A series of an exporter as its lines name it: parsed once, shared by every sample of it. */
export interface KnownSeries {
  /**
   * The `name{labels}` text of its lines: the series among the exporter's lines. When cached, a
   * string of its own (see `ownCopy`), the key of the caches downstream (the scheduler's series
   * identities); otherwise a slice of its line, which nothing keeps past it.
   */
  readonly text: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The cached series of the next sample line of the last scrape (see SeriesTexts `first`). */
  next: KnownSeries | undefined;
}

/**
 * The series an exporter sent before, by the `name{labels}` text of their lines, with their name
 * and parsed labels: a known series costs one lookup instead of a parse, and its samples carry the
 * same text string (`KnownSeries.text`), so the caches keyed by it downstream (the scheduler's
 * series identities) find it by that very string. Kept by the source across its scrapes (a round
 * is a scrape) and bounded (src/bounded_cache.ts).
 *
 * An exporter sends its series in the same order at every scrape: the cached series of each
 * sample line is linked to the cached series of the sample line after it (`next`), from `first`,
 * and a line that starts with the series text expected there, followed by a blank, is that series
 * without cutting its text out of the line nor hashing it (a line the link does not predict is
 * looked up by its text). Links are made only between series in the cache, and a predicted series
 * is confirmed in the cache (a lookup by its own string, whose hash V8 keeps), so what is not
 * cached is not kept alive by a link.
 *
 * Kept only where it pays: an exporter whose last scrape had more than SPARSE_FACTOR times as many
 * series as the cache holds would find at most 1/SPARSE_FACTOR of its lines here, while each
 * series cached costs about a kilobyte with what is derived from it downstream (the scheduler's
 * identities). Such an exporter's series are not cached, and the cache is emptied, until a scrape
 * has fewer (`scraped`); and nothing is cached before the first scrape has told how many there
 * are, so that a large exporter's first scrape does not fill the caches only to empty them.
 * Measured under the hostile benchmark's 50,000-series exporter (docs/PERFORMANCE.md, `sparse9`).
 */
export class SeriesTexts extends BoundedCache<string, KnownSeries> {
  /** The cached series of the first sample line of the last scrape. */
  first: KnownSeries | undefined;
  /** Whether series are kept: once a scrape has told how many the exporter has, and while that is not too many. */
  #keeps = false;

  get keeps(): boolean {
    return this.#keeps;
  }

  /** Tells the cache how many series the scrape that ended had. */
  scraped(series: number): void {
    this.#keeps = series <= SPARSE_FACTOR * this.capacity;
    if (!this.#keeps) this.clear();
  }

  /**
   * Remembers a series (with a copy of its text, see `ownCopy`); returns it, and whether it is
   * cached. A series it does not keep (not keeping, or full: a full cache keeps what it holds) is
   * made for its line alone, its text and name slices of the line: nothing holds it past the line,
   * so the copy would be work for nothing (two of them per line of an exporter too large to keep).
   */
  add(text: string, name: string, labels: Record<string, string>): { series: KnownSeries; cached: boolean } {
    if (!this.#keeps || !this.hasRoom()) {
      return { series: { text, name, labels: Object.freeze(labels), next: undefined }, cached: false };
    }
    const own = ownCopy(text);
    // The name cut from the copy: a slice of the line would keep the body piece it came from.
    const series = { text: own, name: own.slice(0, name.length), labels: Object.freeze(labels), next: undefined };
    return { series, cached: this.set(own, series) };
  }

  /** `expected` when it is still cached (and marked as used in this round), else undefined. */
  confirm(expected: KnownSeries): KnownSeries | undefined {
    return this.get(expected.text) === expected ? expected : undefined;
  }

  override clear(): void {
    super.clear();
    this.first = undefined;
  }
}

/**
 * Parses the text exposition format (version 0.0.4, and the sample lines of OpenMetrics):
 * comments, HELP and TYPE lines, label values with `\\`, `\"` and `\n` escapes, NaN/+Inf/-Inf
 * values and optional timestamps. `wanted`, when given, keeps only samples with those names.
 *
 * Incremental: the body is pushed in pieces as it arrives and each line is parsed as soon as it
 * is complete, so the parser holds at most one unfinished line (MAX_LINE_CHARS), never the body.
 */
export class PrometheusTextParser {
  #wanted: ReadonlySet<string> | undefined;
  #known: SeriesTexts;
  #pending = "";
  /** The current line is too long: it was reported and its rest is skipped up to its newline. */
  #skipping = false;
  #lineNo = 0;
  /** The cached series of the last sample line parsed in this scrape: its `next` is the one expected. */
  #previous: KnownSeries | undefined;

  /** `known`: the series of earlier scrapes of the same exporter (a parser used once keeps none). */
  constructor(wanted?: ReadonlySet<string>, known?: SeriesTexts) {
    this.#wanted = wanted;
    this.#known = known ?? new SeriesTexts(0);
  }

  /** Parses every line `text` completes; its unfinished last line waits for the next push. */
  push(text: string, sink: ParseSink): void {
    let start = 0;
    for (;;) {
      const end = text.indexOf("\n", start);
      if (end < 0) break;
      if (this.#skipping) this.#skipping = false;
      else this.#line(this.#pending + text.slice(start, end), sink);
      this.#pending = "";
      this.#lineNo++;
      start = end + 1;
    }
    if (this.#skipping) return;
    this.#pending += text.slice(start);
    if (this.#pending.length > MAX_LINE_CHARS) {
      sink.error({ line: this.#lineNo + 1, message: `Line longer than ${MAX_LINE_CHARS} characters` });
      this.#pending = "";
      this.#skipping = true;
    }
  }

  /** Parses the last line when the text does not end with a newline. */
  end(sink: ParseSink): void {
    if (!this.#skipping && this.#pending !== "") this.#line(this.#pending, sink);
    this.#pending = "";
    this.#skipping = false;
    // The last line's series is followed by none: no link from it to a series of an older scrape.
    if (this.#previous) this.#previous.next = undefined;
  }

  /** Parses line number #lineNo + 1. */
  #line(raw: string, sink: ParseSink): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const trimmed = line.trimStart();
    if (trimmed === "" || trimmed.charCodeAt(0) === HASH) return;
    const lineNo = this.#lineNo + 1;
    const known = this.#known;
    let series = this.#expected(trimmed);
    let at: number;
    let cached = true;
    if (series) at = series.text.length;
    else {
      const nameEnd = nameLength(trimmed);
      if (nameEnd === 0) {
        sink.error({ line: lineNo, message: `Invalid metric name in '${trimmed.slice(0, 80)}'` });
        return;
      }
      // Nothing after the labels can hold a '}': the text up to the last one is the series.
      const end = trimmed.charCodeAt(nameEnd) === OPEN_BRACE ? trimmed.lastIndexOf("}") + 1 : nameEnd;
      const text = trimmed.slice(0, end);
      series = known.get(text);
      at = end;
      if (series) {
        if (this.#wanted && !this.#wanted.has(series.name)) return;
      } else {
        const name = trimmed.slice(0, nameEnd);
        if (this.#wanted && !this.#wanted.has(name)) return;
        const parsed = parseLabels(trimmed, nameEnd);
        if ("error" in parsed) {
          sink.error({ line: lineNo, message: `${parsed.error} in '${trimmed.slice(0, 80)}'` });
          return;
        }
        at = parsed.end;
        if (at === end) ({ series, cached } = known.add(text, name, parsed.labels));
        else {
          series = { text: trimmed.slice(0, at), name, labels: parsed.labels, next: undefined };
          cached = false;
        }
      }
      if (cached) {
        if (this.#previous) this.#previous.next = series;
        else known.first = series;
        this.#previous = series;
      }
    }
    const rest = parseValue(trimmed, at);
    if (typeof rest === "number") sink.sample(series, rest, undefined, lineNo, cached);
    else if ("error" in rest) sink.error({ line: lineNo, message: `${rest.error} in '${trimmed.slice(0, 80)}'` });
    else sink.sample(series, rest.value, rest.timestampMs, lineNo, cached);
  }

  /**
   * The series the links of the last scrape expect on this line (see SeriesTexts) when the line
   * names it: its text, then a blank (the value follows), as a lookup of the line's text would find
   * it, and it is still cached and selected by `wanted` (the entries active may change).
   */
  #expected(line: string): KnownSeries | undefined {
    const expected = this.#previous ? this.#previous.next : this.#known.first;
    if (!expected) return undefined;
    const after = line.charCodeAt(expected.text.length);
    if ((after !== SPACE && after !== TAB) || !line.startsWith(expected.text)) return undefined;
    if (!this.#known.confirm(expected)) return undefined;
    if (this.#wanted && !this.#wanted.has(expected.name)) return undefined;
    this.#previous = expected;
    return expected;
  }
}

/** Length of the metric name that starts `line` ([a-zA-Z_:][a-zA-Z0-9_:]*), 0 when it has none. */
function nameLength(line: string): number {
  let i = 0;
  for (;; i++) {
    const c = line.charCodeAt(i);
    const letter = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a);
    if (letter || c === 0x5f || c === 0x3a || (i > 0 && c >= 0x30 && c <= 0x39)) continue;
    return i;
  }
}

/** The labels of a line whose name ends at `pos`, and where they end. */
function parseLabels(line: string, pos: number): { labels: Record<string, string>; end: number } | { error: string } {
  const labels: Record<string, string> = {};
  let i = pos;
  if (line[i] === "{") {
    i++;
    /** Position of the next backslash at or after i (-1: none left), so values are copied in runs. */
    let escapeAt = line.indexOf("\\", i);
    for (;;) {
      while (line[i] === " " || line[i] === "\t") i++;
      if (line[i] === "}") {
        i++;
        break;
      }
      LABEL_NAME_RE.lastIndex = i;
      const m = LABEL_NAME_RE.exec(line);
      if (!m) return { error: "Invalid label name" };
      const labelName = m[0];
      i += labelName.length;
      while (line[i] === " ") i++;
      if (line[i] !== "=") return { error: `Expected '=' after label ${labelName}` };
      i++;
      while (line[i] === " ") i++;
      if (line[i] !== '"') return { error: `Expected '"' to open the value of label ${labelName}` };
      i++;
      let value = "";
      for (;;) {
        if (escapeAt >= 0 && escapeAt < i) escapeAt = line.indexOf("\\", i);
        const quote = line.indexOf('"', i);
        if (quote < 0) return { error: `Unterminated value of label ${labelName}` };
        if (escapeAt < 0 || quote < escapeAt) {
          value += line.slice(i, quote);
          i = quote + 1;
          break;
        }
        value += line.slice(i, escapeAt);
        const n = line[escapeAt + 1];
        if (n === "n") value += "\n";
        else if (n === "\\") value += "\\";
        else if (n === '"') value += '"';
        else value += "\\" + (n ?? "");
        i = escapeAt + 2;
      }
      labels[labelName] = value;
      while (line[i] === " ") i++;
      if (line[i] === ",") i++;
      else if (line[i] !== "}") return { error: `Expected ',' or '}' after label ${labelName}` };
    }
  }
  return { labels, end: i };
}

/**
 * The value and the optional timestamp that follow the series at `i`; the common line's value (a
 * number and nothing after it) as a number alone, no object.
 */
function parseValue(line: string, i: number): number | { value: number; timestampMs?: number } | { error: string } {
  // The common line, without splitting the rest of the line.
  let start = i;
  while (line[start] === " " || line[start] === "\t") start++;
  let end = start;
  while (end < line.length && line[end] !== " " && line[end] !== "\t") end++;
  if (end === line.length && end > start) {
    const value = plainDecimalAt(line, start, end) ?? parseNumber(line.slice(start));
    if (!Number.isNaN(value)) return value;
  }
  const rest = line.slice(i).trim().split(/[ \t]+/);
  const valueText = rest[0];
  if (valueText === undefined || valueText === "") return { error: "Missing value" };
  const value = parseNumber(valueText);
  if (Number.isNaN(value) && valueText !== "NaN") return { error: `Invalid value '${valueText}'` };
  if (rest.length > 1) {
    const ts = Number(rest[1]);
    if (!Number.isFinite(ts)) return { error: `Invalid timestamp '${rest[1]}'` };
    return { value, timestampMs: ts };
  }
  return { value };
}
