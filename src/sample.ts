/**
 * The one sample type every stage passes on: sources produce it, the spool stores it, the
 * forwarder writes it to the central `metrics` table.
 */
export interface Sample {
  /** Milliseconds since the Unix epoch; fractions keep sub-millisecond precision. */
  timestampMs: number;
  deviceId: string;
  metricId: string;
  /** NaN is allowed (a missing or non-numeric reading). */
  value: number;
  labels: Labels;
}

export type Labels = Record<string, unknown>;

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
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) return NaN;
  return Number(text);
}
