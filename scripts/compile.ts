/**
 * `deno task compile [--target <triple>]`: builds the single-file binary, dist/kwollector (host)
 * or dist/kwollector-<target>, with the least permissions the program needs; sql/ is embedded
 * through the module graph (src/central/migrations.ts), and nothing is read from the source tree
 * or downloaded at run time. tests/packaging_test.ts runs the program with exactly these
 * permissions, from another directory.
 *
 * `deno compile` downloads its runtime (denort) from dl.deno.land: where that host is
 * unreachable it cannot run, and the rest is verified with `deno run` and the same flags.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";

/**
 * net: devices and the central database; read/write: the config, metrics.d, the spool and
 * IPMI's private temp files, wherever the operator puts them; env: KWOLLECT_<KEY> (and
 * postgres.js and modbus-serial read many names); sys=hostname: the default edge_id,
 * sys=statfs: the free disk space behind the telemetry's outage budget;
 * run=ipmi-sensors: the IPMI source's reader.
 */
export const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=hostname,statfs",
  "--allow-run=ipmi-sensors",
];

/**
 * A 64 MB V8 heap keeps the collector's memory flat during a drain (V8 otherwise grows its heap
 * lazily: 267 MB and rising over a 1M-sample drain, 130 MB and flat with the limit).
 * Optimizing compilation runs on the main thread (`--no-concurrent-recompilation`): on V8's
 * compiler threads, each compile's memory comes from a glibc arena of that thread, which keeps
 * it after the compile (12–16 MB of RSS after loading a 5,000-entry metrics.d file, 2–3 MB
 * without; docs/PERFORMANCE.md "Hostile input, fourth round").
 * Objects are born young whatever their allocation site's past (`--no-allocation-site-pretenuring`):
 * V8 otherwise allocates straight into the old space at a site whose objects it found alive at a
 * young collection, as a poll's readings and a batch's rows are during the few milliseconds they
 * live. Born old, they filled the old space, whose full collections and marking threads cost
 * about a seventh of workload A's CPU (docs/PERFORMANCE.md `pretenure13`).
 */
export const V8_FLAGS =
  "--v8-flags=--max-old-space-size=64,--max-semi-space-size=2,--no-concurrent-recompilation,--no-allocation-site-pretenuring";

/**
 * The runtime flags the binary embeds, and that `deno run` takes to run the same program:
 * V8_FLAGS, and no V8 code cache (`--no-code-cache`). A code cache saves compiling the modules at
 * start (about 14 ms of `kwollector status`'s 66 ms), and costs the collector's whole life: the
 * cached functions are deserialized into the V8 heap whether they run again or not, and `deno run`
 * keeps its cache file mapped. Without it, workload A's collector holds 5–7 MB less (88–91
 * against 95–97 MB) and an idle one 6 MB less (61 against 67 MB; docs/PERFORMANCE.md
 * `codecache18`).
 */
export const RUNTIME_FLAGS = [V8_FLAGS, "--no-code-cache"] as const;

/**
 * glibc's malloc with fixed thresholds: memory freed at the top of a heap goes back to the
 * system above 128 KiB (`trim_threshold`), and blocks of 128 KiB and more are mapped apart and
 * unmapped when freed (`mmap_threshold`). By default glibc raises both thresholds each time a
 * large mapped block is freed (up to 32 and 64 MB), after which the main C heap keeps what
 * SQLite, the sockets and the compiler freed: 16–18 MB of it at the hostile benchmark's peak,
 * about 10 MB with these (docs/PERFORMANCE.md "glibc's malloc gives memory back"). glibc reads
 * them from the environment at start, so a program cannot set them for itself: the systemd units
 * (config/) and the `kwollector` task set GLIBC_TUNABLES to this value, and so do the benchmarks.
 */
export const GLIBC_TUNABLES = "glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The demo's embedded database (PGlite, 27 MB) is not part of the program. */
function excluded(): string[] {
  let store: string[] = [];
  try {
    store = [...Deno.readDirSync(`${ROOT}/node_modules/.deno`)].map((e) => `node_modules/.deno/${e.name}`);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return ["node_modules/@electric-sql", ...store.filter((p) => p.includes("/@electric-sql+"))];
}

export const TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

export function compileArgs(target: string | undefined): string[] {
  return [
    "compile",
    ...RUNTIME_FLAGS,
    ...PERMISSIONS,
    ...excluded().flatMap((path) => ["--exclude", path]),
    ...(target ? ["--target", target] : []),
    "--output",
    target ? `dist/kwollector-${target}` : "dist/kwollector",
    "main.ts",
  ];
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { target: { type: "string" }, print: { type: "boolean" } },
    strict: true,
  });
  if (values.target !== undefined && !TARGETS.includes(values.target)) {
    console.error(`Unknown --target '${values.target}': expected one of ${TARGETS.join(", ")}`);
    Deno.exit(2);
  }
  const args = compileArgs(values.target);
  if (values.print) {
    console.log(["deno", ...args].join(" "));
    Deno.exit(0);
  }
  const status = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT }).spawn().status;
  Deno.exit(status.code);
}
