import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { CONFIG_KEYS, DEFAULTS, type KeySpec } from "../config/defaults.ts";
import { UsageError } from "../config/errors.ts";

export const INIT_HELP = `kwollector init [PATH] [--force]

Writes a commented configuration file with every key, its meaning and its default (all
commented out, so the file changes nothing until a line is uncommented). Without PATH, or with
'-', prints it. An existing file is kept unless --force is given.

Examples:
  kwollector init /etc/kwollect/kwollector.yaml
  kwollector init > kwollector.yaml`;

/** Section titles of the configuration file and the README's reference, in this order. */
export const GROUP_TITLES: Record<KeySpec["group"], string> = {
  collector: "Collector: polling the devices of metrics_dir",
  database: "Central database: where the spool is forwarded",
  spool: "Spool: the local file every sample is written to first",
  forward: "Forwarding to the central database",
  "setup-db": "setup-db: creating and upgrading the central database",
  wattmetre: "wattmetre: reading a wattmeter's stream",
  oar: "OAR (Kwollect's kwollect-setup-db-oar)",
};

export function initCommand(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { force: { type: "boolean" } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional.*$/s, ""));
  }
  if (parsed.positionals.length > 1) {
    throw new UsageError(`Expected at most one output file, got '${parsed.positionals.join("' '")}'`);
  }
  const path = parsed.positionals[0];
  const text = configTemplate();
  if (path === undefined || path === "-") {
    console.log(text.trimEnd());
    return 0;
  }
  try {
    // The file will hold database passwords: readable by its owner and group only.
    Deno.writeTextFileSync(path, text, { mode: 0o640, createNew: parsed.values.force !== true });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new UsageError(`Configuration file '${path}' already exists: not overwritten (use --force to replace it)`);
    }
    throw new Error(`Cannot write configuration file '${path}': ${(err as Error).message}`);
  }
  console.log(`Wrote ${path}: every key commented out with its default; uncomment what you change`);
  return 0;
}

/** The commented configuration file: every key of DEFAULTS, grouped, with its doc and default. */
export function configTemplate(): string {
  const lines = [
    "# kwollector configuration (written by 'kwollector init').",
    "#",
    "# Every key is listed with its default value, commented out: uncomment a line to change it.",
    "# Any key can also be given as --key value on the command line or as the environment",
    "# variable KWOLLECT_<KEY>; the command line wins over the environment, which wins over this",
    "# file. Unknown keys are errors. Durations and sizes carry their unit in the key name.",
  ];
  for (const [group, title] of Object.entries(GROUP_TITLES)) {
    const keys = CONFIG_KEYS.filter((k) => DEFAULTS[k].group === group);
    if (keys.length === 0) continue;
    lines.push("", `# --- ${title} ---`);
    for (const key of keys) {
      const spec: KeySpec = DEFAULTS[key];
      lines.push("", `# ${spec.doc}${constraints(spec)}`, `#${key}: ${yamlScalar(spec.default)}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** What a value may be, beyond the doc line: "(one of: a, b)", "(at least 1; at most 9)", "(secret)". */
export function constraints(spec: KeySpec): string {
  const parts: string[] = [];
  if (spec.choices) parts.push(`one of: ${spec.choices.join(", ")}`);
  if (spec.min !== undefined) parts.push(`at least ${spec.min}`);
  if (spec.max !== undefined) parts.push(`at most ${spec.max}`);
  if (spec.type === "boolean") parts.push("true or false");
  if (spec.secret) parts.push("secret: never logged");
  return parts.length > 0 ? ` (${parts.join("; ")})` : "";
}

export function yamlScalar(value: string | number | boolean): string {
  return stringify(value).trimEnd();
}
