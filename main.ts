/**
 * kwollector: parses the subcommand, runs it, maps errors to exit codes (CONTRACT.md):
 * 0 success, 2 usage or configuration error, 3 central database unreachable (flush), 1 anything
 * else, our own bugs included (logged CRITICAL with their stack: see src/cli/crash.ts).
 */
import { ConfigError, UsageError } from "./src/config/errors.ts";
import { errorMessage, logger } from "./src/log.ts";
import { VERSION } from "./src/version.ts";
import { RUN_HELP, runCommand } from "./src/cli/run.ts";
import { FLUSH_HELP, flushCommand } from "./src/cli/flush.ts";
import { STATUS_HELP, statusCommand } from "./src/cli/status.ts";
import { CHECK_HELP, checkCommand } from "./src/cli/check.ts";
import { SETUP_DB_HELP, SETUP_DB_OAR_HELP, setupDbCommand, setupDbOarCommand } from "./src/cli/setup_db.ts";
import { WATTMETRE_HELP, wattmetreCommand } from "./src/cli/wattmetre.ts";
import { INIT_HELP, initCommand } from "./src/cli/init.ts";
import { installCrashHandlers, stackOf } from "./src/cli/crash.ts";
import { classify } from "./src/forward/classify.ts";
import { TRUST_HELP, trustCommand } from "./src/cli/trust.ts";

interface Subcommand {
  help: string;
  run(argv: string[]): Promise<number> | number;
}

const SUBCOMMANDS: Record<string, Subcommand> = {
  run: { help: RUN_HELP, run: runCommand },
  flush: { help: FLUSH_HELP, run: flushCommand },
  status: { help: STATUS_HELP, run: statusCommand },
  check: { help: CHECK_HELP, run: checkCommand },
  "setup-db": { help: SETUP_DB_HELP, run: setupDbCommand },
  "setup-db-oar": { help: SETUP_DB_OAR_HELP, run: setupDbOarCommand },
  wattmetre: { help: WATTMETRE_HELP, run: wattmetreCommand },
  init: { help: INIT_HELP, run: initCommand },
  trust: { help: TRUST_HELP, run: trustCommand },
  version: { help: "kwollector version\n\nPrints the version.", run: () => (console.log(VERSION), 0) },
};

const USAGE = `kwollector ${VERSION}: edge collector for Kwollect (poll, spool, forward exactly once)

Usage: kwollector <subcommand> [CONFIG] [--key value ...]
       kwollector CONFIG            (same as: kwollector run CONFIG)

Subcommands:
${Object.entries(SUBCOMMANDS).map(([n, s]) => `  ${n.padEnd(10)} ${s.help.split("\n")[2] ?? ""}`).join("\n")}

Every configuration key is also --key value or KWOLLECT_<KEY>. 'kwollector <subcommand> --help'
shows examples.`;

export async function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    console.log(USAGE);
    return first === undefined ? 2 : 0;
  }
  if (first === "--version") return SUBCOMMANDS.version!.run([]);
  let name = first;
  let argv = rest;
  if (!Object.hasOwn(SUBCOMMANDS, first)) {
    if (first.startsWith("-") || !/\.(ya?ml|conf)$/i.test(first) && !fileExists(first)) {
      console.error(`Unknown subcommand '${first}'\n\n${USAGE}`);
      return 2;
    }
    name = "run";
    argv = args;
  }
  const sub = SUBCOMMANDS[name]!;
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(sub.help);
    return 0;
  }
  installCrashHandlers();
  try {
    return await sub.run(argv);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UsageError) {
      console.error(err.message);
      return 2;
    }
    // A bug carries its stack, so that the report says where; other failures say what and why.
    const stack = classify(err) === "bug" ? stackOf(err) : undefined;
    logger.critical(`${name} failed`, { error: errorMessage(err), stack });
    return 1;
  }
}

function fileExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
