import { parseArgs } from "node:util";
import { CONFIG_KEYS } from "../config/defaults.ts";
import { UsageError } from "../config/errors.ts";
import { resolveConfig, type ResolvedConfig } from "../config/resolve.ts";
import { parseLogLevel, setLogLevel } from "../log.ts";

/**
 * Command-line parsing for every subcommand: `[CONFIG] [--key value ...]` where every
 * configuration key is accepted as a flag (snake_case or kebab-case), plus the subcommand's own
 * switches. Built on node:util parseArgs (strict: an unknown flag is a usage error).
 */
export interface SubcommandFlags {
  /** Boolean switches such as --json, --probe. */
  switches?: string[];
  /** Valued options that are not configuration keys, such as --timeout_s. */
  values?: string[];
  /** Names of the positional arguments required after the optional CONFIG (trust's HOST). */
  positionals?: string[];
}

export interface ParsedCommand {
  configPath: string | undefined;
  /** The positional arguments named by `positionals`, in order. */
  args: string[];
  switches: Set<string>;
  values: Map<string, string>;
  resolved: ResolvedConfig;
}

export function parseCommand(argv: string[], flags: SubcommandFlags = {}): ParsedCommand {
  const options: Record<string, { type: "string" | "boolean" }> = {};
  for (const key of CONFIG_KEYS) {
    options[key] = { type: "string" };
    if (key.includes("_")) options[key.replaceAll("_", "-")] = { type: "string" };
  }
  for (const s of flags.switches ?? []) options[s] = { type: "boolean" };
  for (const v of flags.values ?? []) {
    options[v] = { type: "string" };
    if (v.includes("_")) options[v.replaceAll("_", "-")] = { type: "string" };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional.*$/s, ""));
  }
  const names = flags.positionals ?? [];
  if (parsed.positionals.length > names.length + 1) {
    const given = parsed.positionals.slice(0, parsed.positionals.length - names.length);
    throw new UsageError(`Expected at most one configuration file, got '${given.join("' '")}'`);
  }
  if (parsed.positionals.length < names.length) {
    throw new UsageError(`Missing ${names.slice(parsed.positionals.length).join(", ")}`);
  }
  const args = parsed.positionals.slice(parsed.positionals.length - names.length);
  const configFlags: Record<string, string> = {};
  const switches = new Set<string>();
  const values = new Map<string, string>();
  const own = new Set([...(flags.values ?? [])].flatMap((v) => [v, v.replaceAll("_", "-")]));
  for (const [name, value] of Object.entries(parsed.values)) {
    if (typeof value === "boolean") switches.add(name);
    else if (own.has(name)) values.set(name.replaceAll("-", "_"), String(value));
    else configFlags[name.replaceAll("-", "_")] = String(value);
  }
  const configPath = parsed.positionals.length > names.length ? parsed.positionals[0] : undefined;
  const resolved = resolveConfig({ ...(configPath !== undefined && { file: configPath }), flags: configFlags });
  const level = parseLogLevel(resolved.config.log_level);
  if (level) setLogLevel(level);
  return { configPath, args, switches, values, resolved };
}
