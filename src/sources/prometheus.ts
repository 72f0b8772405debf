import type { MetricEntry } from "../config/metrics_dir.ts";
import type { Labels } from "../sample.ts";
import { parsePrometheusText } from "./prometheus_text.ts";
import type { EntryError, PollResult, Protocol, Reading, Source, SourceContext } from "./source.ts";

/**
 * Prometheus exporters: `prometheus://host:port/<names joined by '-'>` (empty: every metric).
 * One GET of http://host:port/metrics per group and cycle, whatever the number of entries; each
 * entry takes the samples it names, stored as `prom_<name>` with the entry's device id, labels
 * and scale factor (Kwollect ignored the last two). `kwollect_custom` lines follow Kwollect's
 * rules: `_metric_id` becomes the metric id as is, `_timestamp` (epoch seconds) the timestamp;
 * either one empty means absent.
 */

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const CUSTOM = "kwollect_custom";

export const prometheus: Protocol = {
  validate(entry) {
    if (entry.target.port === undefined) {
      return `Missing exporter port in url '${entry.url}' (expected prometheus://host:port/...)`;
    }
    for (const name of namesOf(entry)) {
      if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) {
        return `Invalid Prometheus metric name '${name}' in url '${entry.url}'`;
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

  constructor(entries: readonly MetricEntry[], _ctx: SourceContext) {
    const t = entries[0]!.target;
    const host = t.host.includes(":") ? `[${t.host}]` : t.host;
    this.#url = `http://${host}:${t.port}/metrics`;
  }

  async poll(entries: readonly MetricEntry[], signal: AbortSignal): Promise<PollResult> {
    const scrapeMs = Date.now();
    const res = await fetch(this.#url, { signal, headers: { accept: "text/plain;version=0.0.4" } });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`Exporter ${this.#url} answered HTTP ${res.status} ${res.statusText}`);
    }
    const length = Number(res.headers.get("content-length") ?? 0);
    if (length > MAX_BODY_BYTES) {
      await res.body?.cancel();
      throw new Error(`Exporter ${this.#url} sent ${length} bytes, more than the ${MAX_BODY_BYTES} accepted`);
    }
    const text = await res.text();
    const selections = entries.map((e) => ({ entry: e, names: new Set(namesOf(e)) }));
    const everything = selections.some((s) => s.names.size === 0);
    const wanted = everything ? undefined : new Set(selections.flatMap((s) => [...s.names]));
    const parsed = parsePrometheusText(text, wanted);
    const readings: Reading[] = [];
    const errors: EntryError[] = [];
    for (const { entry, names } of selections) {
      for (const err of parsed.errors) {
        errors.push({ entry, message: `Malformed line ${err.line} from ${this.#url}: ${err.message}` });
      }
      for (const s of parsed.samples) {
        if (names.size > 0 && !names.has(s.name)) continue;
        if (s.name === CUSTOM) {
          const custom = customReading(entry, s.labels, s.value, scrapeMs);
          if ("error" in custom) errors.push({ entry, message: `Line ${s.line} from ${this.#url}: ${custom.error}` });
          else readings.push(custom);
          continue;
        }
        readings.push({
          entry,
          value: s.value,
          metricId: `prom_${s.name}`,
          labels: s.labels,
          ...(s.timestampMs !== undefined && { timestampMs: s.timestampMs }),
        });
      }
    }
    return { readings, errors };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function customReading(
  entry: MetricEntry,
  promLabels: Record<string, string>,
  value: number,
  scrapeMs: number,
): Reading | { error: string } {
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
  return { entry, value, metricId, labels, ...(timestampMs !== undefined && { timestampMs }) };
}
