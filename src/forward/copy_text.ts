import type { Sample } from "../sample.ts";

/**
 * Encodes samples as PostgreSQL COPY text rows for
 * `metrics (device_id, metric_id, labels, "timestamp", value)`: microsecond UTC
 * timestamps, NaN/±Infinity spelled as PostgreSQL reads them, and the COPY escapes for backslash,
 * tab, newline and carriage return. The series comes first, so a row is its series' prefix
 * (`copyPrefix`, rendered once per series by the spool's lease) followed by two numbers.
 */
/** The start of the COPY rows of a series: device, metric and labels (JSON text), each followed by a tab. */
export function copyPrefix(deviceId: string, metricId: string, labelsJson: string): string {
  return `${escape(deviceId)}\t${escape(metricId)}\t${escape(labelsJson)}\t`;
}

/** The COPY row of a sample, from its series' prefix when it carries one. */
export function copyRow(s: Sample & { copyPrefix?: string }): string {
  const prefix = s.copyPrefix ?? copyPrefix(s.deviceId, s.metricId, JSON.stringify(s.labels));
  return `${prefix}${copyTimestamp(s.timestampMs)}\t${copyFloat(s.value)}\n`;
}

/** The last timestamp encoded: the samples of one poll share theirs, and batches hold them in a row. */
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
