import type { Sample } from "../sample.ts";

/**
 * Encodes samples as PostgreSQL COPY text rows for
 * `metrics ("timestamp", device_id, metric_id, value, labels)`: microsecond UTC timestamps,
 * NaN/±Infinity spelled as PostgreSQL reads them, and the COPY escapes for backslash, tab,
 * newline and carriage return.
 */
export function copyRow(s: Sample): string {
  return `${copyTimestamp(s.timestampMs)}\t${escape(s.deviceId)}\t${escape(s.metricId)}\t${copyFloat(s.value)}\t${
    escape(JSON.stringify(s.labels))
  }\n`;
}

export function copyTimestamp(ms: number): string {
  const us = Math.round(ms * 1000);
  const wholeMs = Math.floor(us / 1000);
  const iso = new Date(wholeMs).toISOString(); // 2026-11-25T01:02:03.456Z
  const micro = String(us - wholeMs * 1000).padStart(3, "0");
  return `${iso.slice(0, -1)}${micro}+00`;
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
