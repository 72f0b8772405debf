import type { Sample } from "../../src/sample.ts";

/** `n` samples of seven nodes' power, 10 ms apart from a fixed instant, values from..from+n-1. */
export function samples(n: number, from = 0): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: 1_790_000_000_000 + (from + i) * 10,
    deviceId: `node-${(from + i) % 7}`,
    metricId: "power_watt",
    value: from + i,
    labels: { k: "v" },
  }));
}
