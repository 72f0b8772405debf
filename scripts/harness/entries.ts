import type { MetricEntry } from "../../src/config/metrics_dir.ts";
import { parseMetricUrl } from "../../src/config/metric_url.ts";

/** A metric entry as metrics.d would give it, for tests. */
export function entryFor(url: string, opts: Partial<Omit<MetricEntry, "url" | "target">> = {}): MetricEntry {
  const target = parseMetricUrl(url);
  if ("error" in target) throw new Error(target.error);
  return {
    name: opts.name ?? "test_metric",
    deviceId: opts.deviceId ?? "test-device",
    url,
    target,
    updateEveryMs: opts.updateEveryMs ?? 1000,
    scaleFactor: opts.scaleFactor,
    labels: opts.labels ?? {},
    optional: opts.optional ?? false,
    file: opts.file ?? "test.yaml",
    line: opts.line ?? 1,
  };
}
