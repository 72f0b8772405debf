import {
  type Config,
  CONFIG_KEYS,
  type ConfigKey,
  DEFAULTS,
  type KeySpec,
  TIMER_MAX_MS,
  TIMER_NOTE,
} from "./defaults.ts";
import { ConfigError, type Problem } from "./errors.ts";
import { parseLocatedYaml } from "./yaml_file.ts";
import { registerSecret } from "../log.ts";

/**
 * Resolves every configuration key in one fixed precedence: command-line flag > environment
 * variable `KWOLLECT_<KEY>` > YAML file > default (CONTRACT.md). All problems are collected and
 * thrown together as one ConfigError, each naming its file, line and key.
 */
export interface ConfigInputs {
  /** Path of the YAML configuration file, if one was given. */
  file?: string;
  /** `--key value` flags, keys in snake_case or kebab-case. */
  flags?: Record<string, string>;
  /** Environment (defaults to the process environment). */
  env?: Record<string, string>;
}

export interface ResolvedConfig {
  config: Config;
  /** Where each key's value came from, for `check` and debugging. */
  origin: Record<ConfigKey, string>;
}

const isKey = (k: string): k is ConfigKey => Object.hasOwn(DEFAULTS, k);

export function normalizeKey(key: string): string {
  return key.replaceAll("-", "_");
}

export function resolveConfig(inputs: ConfigInputs): ResolvedConfig {
  const problems: Problem[] = [];
  const values = new Map<ConfigKey, { value: unknown; origin: string; line?: number }>();

  if (inputs.file !== undefined) readFileValues(inputs.file, values, problems);

  const env = inputs.env ?? Deno.env.toObject();
  for (const key of CONFIG_KEYS) {
    const v = env[`KWOLLECT_${key.toUpperCase()}`];
    if (v !== undefined) values.set(key, { value: v, origin: `environment KWOLLECT_${key.toUpperCase()}` });
  }

  for (const [rawKey, value] of Object.entries(inputs.flags ?? {})) {
    const key = normalizeKey(rawKey);
    if (!isKey(key)) {
      problems.push({ file: "command line", key: `--${rawKey}`, message: "Unknown option" });
      continue;
    }
    values.set(key, { value, origin: "command line" });
  }

  const config = {} as Record<ConfigKey, unknown>;
  const origin = {} as Record<ConfigKey, string>;
  for (const key of CONFIG_KEYS) {
    const spec: KeySpec = DEFAULTS[key];
    const given = values.get(key);
    if (!given) {
      config[key] = spec.default;
      origin[key] = "default";
      continue;
    }
    const file = given.origin.startsWith("file ") ? given.origin.slice(5) : given.origin;
    const coerced = coerce(spec, given.value);
    if (typeof coerced === "object") {
      problems.push({ file, ...(given.line !== undefined && { line: given.line }), key, message: coerced.error });
      config[key] = spec.default;
    } else {
      config[key] = coerced;
    }
    origin[key] = given.origin;
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const resolved = config as Config;
  applyDerivedDefaults(resolved);
  for (const key of CONFIG_KEYS) {
    const spec: KeySpec = DEFAULTS[key];
    const value = String(resolved[key]);
    // A short default ("ro", "read") is a common word: redacting it would garble every log line.
    if (spec.secret && (origin[key] !== "default" || value.length >= 6)) registerSecret(value);
  }
  return { config: resolved, origin };
}

/**
 * The values of `keys` alone, in a frozen object: what a part of the program that owns those keys
 * (a protocol's sources) is given of the configuration, so it cannot read a key it does not own.
 */
export function configSubset<K extends ConfigKey>(config: Config, keys: readonly K[]): Readonly<Pick<Config, K>> {
  const subset = {} as Pick<Config, K>;
  for (const key of keys) subset[key] = config[key];
  return Object.freeze(subset);
}

/** Defaults that follow another key, so one file serves `run` and `setup-db` alike. */
function applyDerivedDefaults(c: Config): void {
  if (c.kwollect_db_name === "") c.kwollect_db_name = c.db_name;
  if (c.kwollect_user === "") c.kwollect_user = c.db_user;
  if (c.kwollect_password === "") c.kwollect_password = c.db_password;
  if (c.edge_id === "") c.edge_id = hostName();
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "kwollector";
  }
}

function readFileValues(
  file: string,
  values: Map<ConfigKey, { value: unknown; origin: string; line?: number }>,
  problems: Problem[],
): void {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (err) {
    problems.push({ file, message: `Cannot read configuration file: ${(err as Error).message}` });
    return;
  }
  const { doc, problems: yamlProblems } = parseLocatedYaml(text, file);
  problems.push(...yamlProblems);
  if (doc === undefined) return;
  if (doc.kind !== "map") {
    problems.push({ file, line: doc.line, message: "Expected a mapping of configuration keys" });
    return;
  }
  for (const entry of doc.entries) {
    const key = normalizeKey(entry.key);
    if (!isKey(key)) {
      problems.push({ file, line: entry.keyLine, key: entry.key, message: "Unknown key" });
      continue;
    }
    if (entry.value.kind !== "scalar") {
      problems.push({ file, line: entry.keyLine, key, message: "Expected a single value" });
      continue;
    }
    // An empty value (`archive_path:`) means the empty string, as with Kwollect's pyonf.
    const value = entry.value.value === null ? "" : entry.value.value;
    values.set(key, { value, origin: `file ${file}`, line: entry.keyLine });
  }
}

function coerce(spec: KeySpec, value: unknown): string | number | boolean | { error: string } {
  const quoted = JSON.stringify(typeof value === "string" ? value : String(value));
  switch (spec.type) {
    case "string": {
      const s = String(value);
      if (spec.choices && !spec.choices.includes(s.toLowerCase())) {
        return { error: `Invalid value ${quoted}: expected one of ${spec.choices.join(", ")}` };
      }
      const problem = spec.check?.(s);
      if (problem !== undefined) return { error: problem };
      return spec.choices ? s.toLowerCase() : s;
    }
    case "integer":
    case "number": {
      const n = typeof value === "number" ? value : Number(String(value).trim());
      if (String(value).trim() === "" || !Number.isFinite(n)) {
        return { error: `Invalid value ${quoted}: expected a number` };
      }
      if (spec.type === "integer" && !Number.isInteger(n)) {
        return { error: `Invalid value ${quoted}: expected a whole number` };
      }
      if (spec.min !== undefined && n < spec.min) {
        return { error: `Invalid value ${quoted}: must be at least ${spec.min}` };
      }
      if (spec.max !== undefined && n > spec.max) {
        return {
          error: `Invalid value ${quoted}: must be at most ${spec.max}${spec.max === TIMER_MAX_MS ? TIMER_NOTE : ""}`,
        };
      }
      return n;
    }
    case "boolean": {
      if (typeof value === "boolean") return value;
      const s = String(value).toLowerCase();
      if (["true", "yes", "1", "on"].includes(s)) return true;
      if (["false", "no", "0", "off"].includes(s)) return false;
      return { error: `Invalid value ${quoted}: expected true or false` };
    }
  }
}
