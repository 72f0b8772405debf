/**
 * Logging by operator impact (STYLE.md): `error` = data lost or a person must act, `warning` =
 * unexpected but recovered, `info` = state changes worth knowing, `debug` = everything else.
 *
 * Every line passes through `redact()`, so a secret registered with `registerSecret()` (database
 * passwords, device credentials) never reaches the journal even if an error message quotes it.
 * Lines carry a syslog priority prefix (`<3>`) when stderr goes to journald, and a level word
 * otherwise; no colours are used.
 */

export type LogLevel = "debug" | "info" | "warning" | "error" | "critical";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warning: 30, error: 40, critical: 50 };
const SYSLOG: Record<LogLevel, number> = { debug: 7, info: 6, warning: 4, error: 3, critical: 2 };

export const LOG_LEVELS = Object.keys(RANK) as LogLevel[];

const secrets = new Set<string>();
let threshold = RANK.warning;
let sink: (line: string) => void = (line) => console.error(line);
const journald = Deno.env.get("JOURNAL_STREAM") !== undefined;

/** Accepts Python logging names as Kwollect did (`WARNING`, `warn`, `fatal`). */
export function parseLogLevel(text: string): LogLevel | undefined {
  const t = text.toLowerCase();
  if (t === "warn") return "warning";
  if (t === "fatal") return "critical";
  return (LOG_LEVELS as string[]).includes(t) ? t as LogLevel : undefined;
}

export function setLogLevel(level: LogLevel): void {
  threshold = RANK[level];
}

export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}

/** Secrets shorter than 3 characters are not registered: redacting them would garble text. */
export function registerSecret(secret: string | undefined): void {
  if (secret && secret.length >= 3) secrets.add(secret);
}

export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join("***");
  out = out.split(encodeURIComponent("***")).join("***");
  return out;
}

export function log(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
  if (RANK[level] < threshold) return;
  const parts = [message];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    parts.push(`${k}=${typeof v === "string" ? JSON.stringify(v) : String(v)}`);
  }
  const body = redact(parts.join(" "));
  sink(journald ? `<${SYSLOG[level]}>${body}` : `${level.toUpperCase()} ${body}`);
}

export const logger = {
  debug: (m: string, f?: Record<string, unknown>) => log("debug", m, f),
  info: (m: string, f?: Record<string, unknown>) => log("info", m, f),
  warning: (m: string, f?: Record<string, unknown>) => log("warning", m, f),
  error: (m: string, f?: Record<string, unknown>) => log("error", m, f),
  critical: (m: string, f?: Record<string, unknown>) => log("critical", m, f),
};

/** Message of any thrown value, redacted. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return redact(err.message);
  return redact(String(err));
}
