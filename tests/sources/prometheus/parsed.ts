import type { KnownSeries } from "../../../src/sources/prometheus/text_parser.ts";

/** A sample the parser handed to its sink, as one object to compare. */
export interface Parsed {
  name: string;
  series: string;
  labels: Readonly<Record<string, string>>;
  value: number;
  timestampMs?: number;
  line: number;
  /** Whether the parser's `known` set keeps the series. */
  cached: boolean;
}

/** A sink's `sample` that collects what the parser hands it into `into`. */
export function collecting(into: Parsed[]) {
  return (series: KnownSeries, value: number, timestampMs: number | undefined, line: number, cached: boolean): void => {
    const parsed: Parsed = { name: series.name, series: series.text, labels: series.labels, value, line, cached };
    if (timestampMs !== undefined) parsed.timestampMs = timestampMs;
    into.push(parsed);
  };
}
