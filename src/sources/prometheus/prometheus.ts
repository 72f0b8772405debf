import { redactUrl } from "../../config/metric_url.ts";
import type { MetricEntry } from "../../config/metrics_dir.ts";
import { type Labels, timestampProblem } from "../../sample.ts";
import { type KnownSeries, type LineError, PrometheusTextParser, SeriesTexts } from "./text_parser.ts";
import type { EntryError, HandOver, PollResult, Protocol, Reading, Source, SourceContext } from "../source.ts";
import { consumeText } from "./text_stream.ts";

/**
 * Prometheus exporters: `prometheus://host:port/<names joined by '-'>` (empty: every metric).
 * One GET of http://host:port/metrics per group and cycle, whatever the number of entries; each
 * entry takes the samples it names, stored as `prom_<name>` with the entry's device id, labels
 * and scale factor (Kwollect ignored the last two). `kwollect_custom` lines follow Kwollect's
 * rules: `_metric_id` becomes the metric id as is, `_timestamp` (epoch seconds) the timestamp;
 * either one empty means absent.
 *
 * Bounds: an exporter cannot make the collector hold more than a bounded amount nor hold the
 * event loop, whatever it sends (docs/OPERATIONS.md, "Bounds"):
 * - The body is read as a stream (text_stream.ts) and parsed line by line as it arrives, never
 *   held whole. Past `prometheus_max_body_bytes` bytes (counted after decompression, chunked or
 *   not, whatever Content-Length says) the poll fails.
 * - Past `prometheus_max_series` series selected by the group's entries the poll fails.
 * - Readings are handed over as they are parsed (`Source.poll`'s `handOver`), in parts of about
 *   PART_READINGS, and the body is read on only once the part is taken (stored in the spool): a
 *   scrape holds one part of readings at a time, however many series the exporter sends. Parts
 *   handed over before the poll fails (a limit, the timeout) are kept.
 * - Parsing and building readings run in slices (text_stream.ts), with a turn of the event loop
 *   between them, so the timers of other groups fire on time during a large scrape.
 * - At most MAX_LINE_ERRORS lines that cannot be read (malformed, or a `kwollect_custom` line
 *   breaking its rules) are reported per scrape, plus their count.
 * Each overrun fails this group alone, with an error naming the URL and the key to raise.
 *
 * Compression: fetch asks for gzip and br by default and decodes them as the body is read, in
 * 4 KB pieces, so the byte limit above counts decoded bytes and a gzip bomb is cut after
 * `prometheus_max_body_bytes` of output. Decoding ourselves (DecompressionStream) would be
 * worse: it inflates each input chunk at once (a 64 KB chunk of a bomb is 64 MB). Any other
 * encoding is not decoded by fetch and is refused.
 */

const CUSTOM = "kwollect_custom";
/**
 * Series whose parsed labels a source keeps (about 150 bytes each); an exporter with more is partly
 * cached, one with more than twice as many not at all (SeriesTexts).
 */
const SERIES_TEXTS_MAX = 10_000;
/** Readings a scrape gathers before it hands them over (plus those of one piece of text at most). */
export const PART_READINGS = 2_000;
/** Lines that cannot be read reported per scrape; the others are counted. */
const MAX_LINE_ERRORS = 10;
/** Encodings fetch asks for and decodes as it reads (Deno sends `Accept-Encoding: gzip, br`). */
const DECODED_BY_FETCH = new Set(["", "identity", "gzip", "br"]);

const CONFIG_KEYS = ["prometheus_max_body_bytes", "prometheus_max_series"] as const;
type PrometheusKey = (typeof CONFIG_KEYS)[number];

export const prometheus: Protocol<PrometheusKey> = {
  configKeys: CONFIG_KEYS,
  validate(entry) {
    if (entry.target.port === undefined) {
      return `Missing exporter port in url '${redactUrl(entry.url)}' (expected prometheus://host:port/...)`;
    }
    for (const name of namesOf(entry)) {
      if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) {
        return `Invalid Prometheus metric name '${name}' in url '${redactUrl(entry.url)}'`;
      }
    }
    return undefined;
  },
  groupKey: (entry) => `prometheus://${entry.target.host}:${entry.target.port}`,
  endpoint: (entry) => `${entry.target.host}:${entry.target.port}`,
  create: (entries, ctx) => new PrometheusSource(entries, ctx),
};

function namesOf(entry: MetricEntry): string[] {
  return entry.target.path.split("-").map((s) => s.trim()).filter((s) => s !== "");
}

class PrometheusSource implements Source {
  #url: string;
  #maxBodyBytes: number;
  #maxSeries: number;
  /** The exporter's series seen in earlier scrapes: their labels are parsed once. */
  #known: SeriesTexts;

  constructor(entries: readonly MetricEntry[], ctx: SourceContext<PrometheusKey>) {
    const t = entries[0]!.target;
    const host = t.host.includes(":") ? `[${t.host}]` : t.host;
    this.#url = `http://${host}:${t.port}/metrics`;
    this.#maxBodyBytes = ctx.options.prometheus_max_body_bytes;
    this.#maxSeries = ctx.options.prometheus_max_series;
    this.#known = new SeriesTexts(Math.min(this.#maxSeries, SERIES_TEXTS_MAX));
  }

  async poll(entries: readonly MetricEntry[], signal: AbortSignal, handOver?: HandOver): Promise<PollResult> {
    const scrapeMs = Date.now();
    const res = await fetch(this.#url, { signal, headers: { accept: "text/plain;version=0.0.4" } });
    const encoding = (res.headers.get("content-encoding") ?? "").trim().toLowerCase();
    const length = Number(res.headers.get("content-length") ?? 0);
    let refusal: string | undefined;
    if (!res.ok) refusal = `Exporter ${this.#url} answered HTTP ${res.status} ${res.statusText}`;
    else if (!DECODED_BY_FETCH.has(encoding)) {
      refusal = `Exporter ${this.#url} sent a body in encoding '${encoding}' (accepted: gzip, br, identity)`;
    } else if (length > this.#maxBodyBytes) {
      refusal = `Exporter ${this.#url} sent ${length} bytes, more than the ${this.#maxBodyBytes} accepted ` +
        `(prometheus_max_body_bytes)`;
    }
    if (refusal !== undefined) {
      await res.body?.cancel();
      throw new Error(refusal);
    }
    const scrape = new Scrape(entries, this.#url, scrapeMs, this.#maxSeries);
    this.#known.nextRound();
    const parser = new PrometheusTextParser(scrape.wanted, this.#known);
    const decoded = encoding === "" || encoding === "identity" ? "" : ` once decoded from ${encoding}`;
    const tooLarge = `Exporter ${this.#url} sent more than ${this.#maxBodyBytes} bytes${decoded} ` +
      `(prometheus_max_body_bytes)`;
    if (res.body) {
      await consumeText(res.body, {
        maxBytes: this.#maxBodyBytes,
        signal,
        onText: (text) => {
          parser.push(text, scrape);
          if (handOver && scrape.pending >= PART_READINGS) return handOver(scrape.takeReadings());
        },
        tooLarge: () => new Error(tooLarge),
      });
    }
    parser.end(scrape);
    this.#known.scraped(scrape.series);
    return scrape.result();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The readings of one scrape, built as the parser hands over samples: each sample goes to the
 * entries that select its name (an index, so the work is per sample, not per sample and entry).
 */
class Scrape {
  /** Names some entry selects; undefined when one entry takes every metric. */
  readonly wanted: ReadonlySet<string> | undefined;
  #byName = new Map<string, MetricEntry[]>();
  #everything: MetricEntry[] = [];
  #metricIds = new Map<string, string>();
  #url: string;
  #scrapeMs: number;
  #maxSeries: number;
  #series = 0;
  #readings: Reading[] = [];
  /** Problems of single lines, each with the entries it concerns (undefined: all of them). */
  #problems: { message: string; entries: readonly MetricEntry[] | undefined }[] = [];
  #moreProblems = 0;

  constructor(entries: readonly MetricEntry[], url: string, scrapeMs: number, maxSeries: number) {
    this.#url = url;
    this.#scrapeMs = scrapeMs;
    this.#maxSeries = maxSeries;
    for (const entry of entries) {
      const names = new Set(namesOf(entry));
      if (names.size === 0) this.#everything.push(entry);
      for (const name of names) {
        const list = this.#byName.get(name);
        if (list) list.push(entry);
        else this.#byName.set(name, [entry]);
      }
    }
    this.wanted = this.#everything.length > 0 ? undefined : new Set(this.#byName.keys());
  }

  /** Readings gathered and not yet taken. */
  get pending(): number {
    return this.#readings.length;
  }

  /** The readings gathered since the last call: they are the caller's. */
  takeReadings(): Reading[] {
    const part = this.#readings;
    this.#readings = [];
    return part;
  }

  /** Series of this scrape selected by its entries. */
  get series(): number {
    return this.#series;
  }

  sample(series: KnownSeries, value: number, timestampMs: number | undefined, line: number, cached: boolean): void {
    if (++this.#series > this.#maxSeries) {
      throw new Error(
        `Exporter ${this.#url} sent more than ${this.#maxSeries} series selected by its entries (prometheus_max_series)`,
      );
    }
    const named = this.#byName.get(series.name);
    if (this.#everything.length > 0) this.#take(series, value, timestampMs, line, cached, this.#everything);
    if (named) this.#take(series, value, timestampMs, line, cached, named);
  }

  /** A malformed line: its metric, and so its entries, is unknown. */
  error(e: LineError): void {
    this.#problem(`Malformed line ${e.line} from ${this.#url}: ${e.message}`, undefined);
  }

  result(): PollResult {
    const all = [...new Set([...this.#everything, ...[...this.#byName.values()].flat()])];
    const errors: EntryError[] = [];
    for (const { message, entries } of this.#problems) {
      for (const entry of entries ?? all) errors.push({ entry, message });
    }
    if (this.#moreProblems > 0) {
      const message = `${this.#moreProblems} more lines from ${this.#url} could not be read in this scrape`;
      for (const entry of all) errors.push({ entry, message });
    }
    return { readings: this.#readings, errors };
  }

  #problem(message: string, entries: readonly MetricEntry[] | undefined): void {
    if (this.#problems.length < MAX_LINE_ERRORS) this.#problems.push({ message, entries });
    else this.#moreProblems++;
  }

  #take(
    series: KnownSeries,
    value: number,
    timestampMs: number | undefined,
    line: number,
    cached: boolean,
    entries: readonly MetricEntry[],
  ): void {
    if (series.name === CUSTOM) {
      const custom = customFields(series.labels, this.#scrapeMs);
      if ("error" in custom) this.#problem(`Line ${line} from ${this.#url}: ${custom.error}`, entries);
      else for (const entry of entries) this.#readings.push({ entry, value, ...custom });
      return;
    }
    const metricId = this.#metricId(series.name);
    // A series the source does not keep is not named: its identity is not kept downstream either.
    const seriesKey = cached ? series.text : undefined;
    for (const entry of entries) {
      // One object literal of one shape per reading (a conditional spread here was a slow path).
      this.#readings.push({ entry, value, metricId, labels: series.labels, seriesKey, timestampMs });
    }
  }

  #metricId(name: string): string {
    let id = this.#metricIds.get(name);
    if (id === undefined) {
      id = `prom_${name}`;
      this.#metricIds.set(name, id);
    }
    return id;
  }
}

/** Kwollect's rules for a `kwollect_custom` line: the metric id and timestamp its labels give. */
function customFields(
  promLabels: Record<string, string>,
  scrapeMs: number,
): { metricId: string; labels: Labels; timestampMs?: number } | { error: string } {
  const labels: Labels = { ...promLabels };
  // An empty _timestamp or _metric_id means absent, as in Kwollect: the node exporter's textfile
  // collector pads a label missing on one line of a metric with "".
  if (labels._timestamp === "") delete labels._timestamp;
  if (labels._metric_id === "") delete labels._metric_id;
  let timestampMs: number | undefined;
  if (labels._timestamp !== undefined) {
    const t = Number(labels._timestamp);
    if (String(labels._timestamp).trim() === "" || !Number.isFinite(t)) {
      return { error: `Cannot parse _timestamp '${String(labels._timestamp)}' of kwollect_custom` };
    }
    const outOfRange = timestampProblem(t, "seconds", scrapeMs);
    if (outOfRange) return { error: `_timestamp of kwollect_custom: ${outOfRange}` };
    timestampMs = t * 1000;
    delete labels._timestamp;
  }
  let metricId = `prom_${CUSTOM}`;
  if (typeof labels._metric_id === "string") {
    metricId = labels._metric_id;
    delete labels._metric_id;
  }
  labels._metric_scrape_time = scrapeMs / 1000;
  labels._metric_origin = `prom_${CUSTOM}`;
  return { metricId, labels, ...(timestampMs !== undefined && { timestampMs }) };
}
