import { parseNumber } from "../sample.ts";

/** One sample line of the Prometheus text exposition format. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
  /** Exposition timestamp in ms, when the line has one. */
  timestampMs?: number;
  line: number;
}

export interface PromParseResult {
  samples: PromSample[];
  /** Malformed lines, each with its line number and the reason; they do not stop the parse. */
  errors: { line: number; message: string }[];
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

/**
 * Parses the text exposition format (version 0.0.4, and the sample lines of OpenMetrics):
 * comments, HELP and TYPE lines, label values with `\\`, `\"` and `\n` escapes, NaN/+Inf/-Inf
 * values and optional timestamps. `wanted`, when given, keeps only samples with those names.
 */
export function parsePrometheusText(text: string, wanted?: ReadonlySet<string>): PromParseResult {
  const samples: PromSample[] = [];
  const errors: { line: number; message: string }[] = [];
  let lineNo = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const raw = text.slice(start, end);
    start = end + 1;
    lineNo++;
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const trimmed = line.trimStart();
    if (trimmed === "" || trimmed.startsWith("#")) {
      if (end === text.length) break;
      continue;
    }
    const nameMatch = NAME_RE.exec(trimmed);
    if (!nameMatch) {
      errors.push({ line: lineNo, message: `Invalid metric name in '${trimmed.slice(0, 80)}'` });
      continue;
    }
    const name = nameMatch[0];
    if (wanted && !wanted.has(name)) continue;
    const parsed = parseRest(trimmed, name.length);
    if ("error" in parsed) errors.push({ line: lineNo, message: `${parsed.error} in '${trimmed.slice(0, 80)}'` });
    else samples.push({ name, line: lineNo, ...parsed });
    if (end === text.length) break;
  }
  return { samples, errors };
}

function parseRest(
  line: string,
  pos: number,
): { labels: Record<string, string>; value: number; timestampMs?: number } | { error: string } {
  const labels: Record<string, string> = {};
  let i = pos;
  if (line[i] === "{") {
    i++;
    for (;;) {
      while (line[i] === " " || line[i] === "\t") i++;
      if (line[i] === "}") {
        i++;
        break;
      }
      const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
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
        const c = line[i];
        if (c === undefined) return { error: `Unterminated value of label ${labelName}` };
        if (c === '"') {
          i++;
          break;
        }
        if (c === "\\") {
          const n = line[i + 1];
          if (n === "n") value += "\n";
          else if (n === "\\") value += "\\";
          else if (n === '"') value += '"';
          else value += "\\" + (n ?? "");
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
      labels[labelName] = value;
      while (line[i] === " ") i++;
      if (line[i] === ",") i++;
      else if (line[i] !== "}") return { error: `Expected ',' or '}' after label ${labelName}` };
    }
  }
  const rest = line.slice(i).trim().split(/[ \t]+/);
  const valueText = rest[0];
  if (valueText === undefined || valueText === "") return { error: "Missing value" };
  const value = parseNumber(valueText);
  if (Number.isNaN(value) && valueText !== "NaN") return { error: `Invalid value '${valueText}'` };
  if (rest.length > 1) {
    const ts = Number(rest[1]);
    if (!Number.isFinite(ts)) return { error: `Invalid timestamp '${rest[1]}'` };
    return { labels, value, timestampMs: ts };
  }
  return { labels, value };
}
