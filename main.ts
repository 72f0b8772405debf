/**
 * kwollector: parses the subcommand, runs it, maps errors to exit codes (CONTRACT.md):
 * 0 success, 2 usage or configuration error, 3 central database unreachable (flush), 1 anything
 * else, our own bugs included (logged CRITICAL with their stack: see src/cli/crash.ts).
 */
import { ConfigError, UsageError } from "./src/config/errors.ts";
import { errorMessage, logger } from "./src/log.ts";
import { VERSION } from "./src/version.ts";
import { installCrashHandlers, stackOf } from "./src/cli/crash.ts";
import { listenForStop } from "./src/cli/signals.ts";
import { classify } from "./src/forward/classify.ts";

interface Loaded {
  help: string;
  run(argv: string[]): Promise<number> | number;
}

interface Subcommand {
  summary: string;
  /** Runs until stopped: SIGINT, SIGTERM and SIGHUP are taken before its code is even loaded. */
  stoppable?: true;
  /** A subcommand's code is loaded only when it runs: `status` does not load the protocols. */
  load(): Promise<Loaded>;
}

const SUBCOMMANDS: Record<string, Subcommand> = {
  run: {
    summary: "poll, spool and forward until stopped",
    stoppable: true,
    load: async () => {
      const m = await import("./src/cli/run.ts");
      return { help: m.RUN_HELP, run: m.runCommand };
    },
  },
  flush: {
    summary: "forward the whole spool now and exit",
    stoppable: true,
    load: async () => {
      const m = await import("./src/cli/flush.ts");
      return { help: m.FLUSH_HELP, run: m.flushCommand };
    },
  },
  status: {
    summary: "spool depth, oldest unsent sample, last forward, each device's last poll",
    load: async () => {
      const m = await import("./src/cli/status.ts");
      return { help: m.STATUS_HELP, run: m.statusCommand };
    },
  },
  check: {
    summary: "validate the configuration and metrics.d; --probe polls once",
    load: async () => {
      const m = await import("./src/cli/check.ts");
      return { help: m.CHECK_HELP, run: m.checkCommand };
    },
  },
  "setup-db": {
    summary: "create or upgrade the central database",
    load: async () => {
      const m = await import("./src/cli/setup_db.ts");
      return { help: m.SETUP_DB_HELP, run: m.setupDbCommand };
    },
  },
  "setup-db-oar": {
    summary: "connect the central database to OAR's",
    load: async () => {
      const m = await import("./src/cli/setup_db.ts");
      return { help: m.SETUP_DB_OAR_HELP, run: m.setupDbOarCommand };
    },
  },
  wattmetre: {
    summary: "spool and forward wattmetre-read lines from standard input",
    stoppable: true,
    load: async () => {
      const m = await import("./src/cli/wattmetre.ts");
      return { help: m.WATTMETRE_HELP, run: m.wattmetreCommand };
    },
  },
  init: {
    summary: "write a commented configuration file with every key",
    load: async () => {
      const m = await import("./src/cli/init.ts");
      return { help: m.INIT_HELP, run: m.initCommand };
    },
  },
  trust: {
    summary: "pin the certificate an https host presents now",
    load: async () => {
      const m = await import("./src/cli/trust.ts");
      return { help: m.TRUST_HELP, run: m.trustCommand };
    },
  },
  version: {
    summary: "print the version",
    load: () =>
      Promise.resolve({ help: "kwollector version\n\nPrints the version.", run: () => (console.log(VERSION), 0) }),
  },
};

const USAGE = `kwollector ${VERSION}: edge collector for Kwollect (poll, spool, forward exactly once)

Usage: kwollector <subcommand> [CONFIG] [--key value ...]
       kwollector CONFIG            (same as: kwollector run CONFIG)

Subcommands:
${Object.entries(SUBCOMMANDS).map(([n, s]) => `  ${n.padEnd(13)} ${s.summary}`).join("\n")}

Every configuration key is also --key value or KWOLLECT_<KEY>. 'kwollector <subcommand> --help'
shows examples.`;

export async function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    console.log(USAGE);
    return first === undefined ? 2 : 0;
  }
  if (first === "--version") return (await SUBCOMMANDS.version!.load()).run([]);
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
  const entry = SUBCOMMANDS[name]!;
  if (entry.stoppable && !argv.includes("--help") && !argv.includes("-h")) listenForStop();
  installCrashHandlers();
  const sub = await entry.load();
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(sub.help);
    return 0;
  }
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
