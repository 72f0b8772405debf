/**
 * The demo: a simulated rack on 127.0.0.1 (a Prometheus exporter, an SNMP PDU, a Modbus energy
 * meter), an embedded central database (PGlite, with the same migrations as setup-db), and the
 * collector started from this checkout. It shows samples arriving, cuts the link to the central
 * database for a while (the collector keeps polling into its spool), restores it, lets the
 * backlog drain, stops the collector, flushes, and proves that every value the devices served is
 * in the central table exactly once. Exit 0 only when 0 samples were lost and 0 duplicated.
 *
 *   deno run -A scripts/demo.ts                     embedded central database (nothing to install)
 *   deno run -A scripts/demo.ts --db_host H --db_port P --db_admin postgres --db_admin_password X
 *                                                   a real PostgreSQL, prepared by setup-db
 */
import { parseArgs } from "node:util";
import { formatBytes } from "../src/cli/format.ts";
import { type Central, prepareRealCentral, type RealCentralOptions, startEmbeddedCentral } from "./demo/central.ts";
import { sleep, within } from "./harness/collector.ts";
import { startLinkCutter } from "./peers/link_cutter.ts";
import { KwollectorCli } from "./demo/kwollector_cli.ts";
import { type LatestSample, latestThroughApi, storedCount, verify, type Window } from "./demo/queries.ts";
import { ServedLog } from "./demo/served.ts";
import { startRack } from "./demo/rack.ts";

const HELP = `deno task demo [--db_host H --db_port P --db_admin USER --db_admin_password PW ...]

Runs a simulated rack (Prometheus exporter, SNMP PDU, Modbus meter) on 127.0.0.1, a central
database, and the collector; simulates an outage of the central database and checks that no
sample was lost or duplicated. Takes about 30 s. Exit 0 when lost = duplicated = 0.

Without --db_host the central database is PGlite, embedded (nothing to install). With --db_host
the demo runs 'kwollector setup-db' against that PostgreSQL (database --db_name, default
kwollector_demo) and uses it instead.

Options:
  --db_host, --db_port, --db_name, --db_user, --db_password, --db_sslmode,
  --db_admin, --db_admin_password     the central PostgreSQL, as in the collector's configuration
  --outage_s N                        length of the simulated outage (default 10)`;

const STEADY_S = 6;
const DRAIN_TIMEOUT_S = 45;
const STOP_TIMEOUT_S = 20;

const started = performance.now();
const say = (text: string) =>
  console.log(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)}s] ${text}`);
const detail = (text: string) => console.log(`         ${text}`);

interface Options extends RealCentralOptions {
  real: boolean;
  setupFlags: string[];
  outageS: number;
}

function parseOptions(argv: string[]): Options | undefined {
  const keys = [
    "db_host",
    "db_port",
    "db_name",
    "db_user",
    "db_password",
    "db_sslmode",
    "db_admin",
    "db_admin_password",
  ];
  const { values } = parseArgs({
    args: argv.map(snakeCaseOption),
    options: {
      ...Object.fromEntries(keys.map((k) => [k, { type: "string" as const }])),
      outage_s: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const text = (k: string) => values[k as keyof typeof values] as string | undefined;
  const outageS = Number(text("outage_s") ?? 10);
  if (!(outageS >= 1 && outageS <= 600)) throw new Error(`Invalid --outage_s '${text("outage_s")}': expected 1..600`);
  const real = text("db_host") !== undefined;
  if (real && text("db_host")!.startsWith("/")) {
    throw new Error(`The demo needs a TCP host for --db_host, got the socket directory '${text("db_host")}'`);
  }
  const port = Number(text("db_port") ?? 5432);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`Invalid --db_port '${text("db_port")}'`);
  return {
    real,
    host: text("db_host") ?? "127.0.0.1",
    port,
    database: text("db_name") ?? "kwollector_demo",
    user: text("db_user") ?? "kwuser",
    password: text("db_password") ?? "changeme",
    sslmode: text("db_sslmode") ?? "prefer",
    setupFlags: ["db_admin", "db_admin_password"].flatMap((k) => (text(k) === undefined ? [] : [`--${k}`, text(k)!])),
    outageS,
  };
}

/** `--db-host` is accepted for `--db_host`, as by kwollector itself. */
function snakeCaseOption(arg: string): string {
  return arg.startsWith("--") ? arg.replace(/^--([^=]*)/, (_, key: string) => `--${key.replaceAll("-", "_")}`) : arg;
}

async function main(argv: string[]): Promise<number> {
  const opts = parseOptions(argv);
  if (!opts) {
    console.log(HELP);
    return 0;
  }
  const dir = await Deno.makeTempDir({ prefix: "kwollector-demo-" });
  const cleanup: (() => Promise<void> | void)[] = [() => Deno.remove(dir, { recursive: true })];
  let cleaning: Promise<void> | undefined;
  const runCleanup = () =>
    cleaning ??= (async () => {
      for (const step of cleanup.reverse()) await Promise.resolve().then(step).catch(() => {});
    })();
  // Interrupted, the demo stops what it started (the collector is a separate process).
  let wasInterrupted = false;
  const interrupted = () => {
    wasInterrupted = true;
    console.error("\nDemo interrupted: stopping the collector and the simulated rack");
    runCleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", interrupted);
  Deno.addSignalListener("SIGTERM", interrupted);
  try {
    return await runDemo(opts, dir, cleanup);
  } catch (err) {
    if (wasInterrupted) return 130;
    throw err;
  } finally {
    await runCleanup();
  }
}

async function runDemo(opts: Options, dir: string, cleanup: (() => Promise<void> | void)[]): Promise<number> {
  console.log("kwollector demo: a simulated rack, a central database, and the collector between them\n");
  const since = new Date();
  const served = new ServedLog();
  const configPath = `${dir}/kwollector.yaml`;
  const cli = new KwollectorCli({ configPath, cwd: dir });

  // 1. Central database, behind a relay the demo can cut.
  let embedded: Central | undefined;
  if (!opts.real) {
    say("Starting the embedded central database (the first start compiles PGlite's WebAssembly)...");
    embedded = await startEmbeddedCentral();
    cleanup.push(() => embedded!.close());
  }
  const relay = startLinkCutter(embedded ?? { host: opts.host, port: opts.port });
  cleanup.push(() => relay.close());

  // 2. The simulated rack.
  const rack = await startRack(served);
  cleanup.push(() => rack.close());
  const window: Window = { devices: rack.deviceIds, since };

  // 3. The collector's configuration: a spool and a metrics.d in a temporary directory.
  await Deno.mkdir(`${dir}/metrics.d`);
  await Deno.writeTextFile(`${dir}/metrics.d/rack.yaml`, rack.metricsYaml);
  await Deno.writeTextFile(
    configPath,
    [
      "# Generated by the kwollector demo",
      `metrics_dir: ${dir}/metrics.d`,
      `spool_path: ${dir}/spool.db`,
      "db_host: 127.0.0.1",
      `db_port: ${relay.port}`,
      `db_name: ${opts.real ? opts.database : "postgres"}`,
      `db_user: ${opts.user}`,
      `db_password: ${JSON.stringify(opts.password)}`,
      `db_sslmode: ${opts.real ? opts.sslmode : "disable"}`,
      // The embedded server does not serve COPY FROM STDIN; INSERT ... SELECT FROM unnest works everywhere.
      `forward_method: ${opts.real ? "copy" : "insert"}`,
      "forward_interval_ms: 250",
      "forward_retry_max_ms: 2000",
      "edge_id: kwollector-demo",
      "log_level: warning",
      "",
    ].join("\n"),
  );

  let central: Central;
  if (embedded) central = embedded;
  else {
    say(`Preparing PostgreSQL at ${opts.host}:${opts.port} with kwollector setup-db...`);
    const real = await prepareRealCentral(cli, opts, opts.setupFlags);
    cleanup.push(() => real.close());
    central = real;
  }
  say(`Central database: ${central.description}`);
  say("Simulated devices:");
  for (const d of rack.descriptions) detail(d);

  // 4. The collector.
  let stopping = false;
  const collector = cli.spawnRun((line) => detail(`collector: ${line}`));
  cleanup.push(() => collector.stop("SIGKILL").then(() => {}));
  const exitedEarly = collector.status.then((s) => {
    if (!stopping) throw new Error(`The collector exited on its own (exit ${s.code})`);
  });
  exitedEarly.catch(() => {});
  const guard = <T>(p: Promise<T>) => Promise.race([p, exitedEarly.then(() => p)]);
  say(`Collector started (pid ${await collector.pid()}): ${configPath}, ${rack.entries} metrics, log_level warning`);

  // 5. Samples arriving.
  const firstDeadline = Date.now() + 30_000;
  while (await storedCount(central.sql, window) === 0) {
    if (Date.now() > firstDeadline) throw new Error("No sample reached the central database within 30 s");
    await guard(sleep(250));
  }
  say("Samples arriving (read back through api.get_metrics, as PostgREST clients do):");
  for (let i = 0; i < STEADY_S / 2; i++) {
    await guard(sleep(2000));
    const latest = await latestThroughApi(central.sql, rack.deviceIds, 5);
    detail(`${await storedCount(central.sql, window)} samples in the central table; newest: ${describeLatest(latest)}`);
  }

  // 6. Outage: the collector keeps polling into its spool.
  const atCut = await storedCount(central.sql, window);
  relay.cut();
  say(`Outage: the central database is unreachable for ${opts.outageS} s (connections reset, new ones refused)`);
  const outageEnd = Date.now() + opts.outageS * 1000;
  while (Date.now() < outageEnd) {
    await guard(sleep(Math.min(2500, Math.max(0, outageEnd - Date.now()))));
    const s = await status(cli);
    detail(
      `kwollector status --json: backlog ${s.spool_rows} samples (spool ${formatBytes(s.spool_bytes)}), oldest unsent ${
        s.oldest_unsent_age_s === null ? "-" : `${s.oldest_unsent_age_s.toFixed(1)} s`
      } ago`,
    );
  }
  const frozen = await storedCount(central.sql, window);
  detail(`central table during the outage: ${atCut} samples at the cut, ${frozen} now`);

  // 7. Restore and drain.
  relay.restore();
  say("Central database reachable again: the collector drains its backlog");
  const drainStart = Date.now();
  for (;;) {
    await guard(sleep(1000));
    const s = await status(cli);
    // New samples keep coming at the polling rate: drained means the oldest unsent one is fresh.
    if (s.oldest_unsent_age_s === null || s.oldest_unsent_age_s < 2) {
      detail(
        `backlog ${s.spool_rows} samples after ${((Date.now() - drainStart) / 1000).toFixed(1)} s; ${await storedCount(
          central.sql,
          window,
        )} samples in the central table`,
      );
      break;
    }
    detail(`backlog ${s.spool_rows} samples`);
    if (Date.now() - drainStart > DRAIN_TIMEOUT_S * 1000) {
      throw new Error(`Backlog not drained within ${DRAIN_TIMEOUT_S} s`);
    }
  }

  // 8. Stop the collector (SIGTERM: in-flight polls finish and are committed), then flush.
  stopping = true;
  const exit = await within(collector.stop("SIGTERM"), STOP_TIMEOUT_S * 1000);
  if (!exit) throw new Error(`The collector did not stop within ${STOP_TIMEOUT_S} s of SIGTERM`);
  say(`Collector stopped by SIGTERM (exit ${exit.code}); the devices are no longer polled`);
  if (exit.code !== 0) throw new Error(`The collector exited with ${exit.code} on SIGTERM`);
  const flush = await cli.output("flush", ["--timeout_s", "30"]);
  say(`kwollector flush: ${(flush.stdout + flush.stderr).trim().split("\n").at(-1)} (exit ${flush.code})`);
  if (flush.code !== 0) throw new Error(`kwollector flush failed (exit ${flush.code})`);

  // 9. The proof.
  const spoolId = (await status(cli)).spool_id;
  if (!spoolId) throw new Error("kwollector status shows no spool id");
  const verdict = await verify(central.sql, window, served.counts(), spoolId);
  const lost = verdict.tallies.reduce((n, t) => n + t.lost, 0);
  const duplicated = verdict.tallies.reduce((n, t) => n + t.duplicated, 0) + verdict.identityDuplicates;
  const storedTotal = verdict.tallies.reduce((n, t) => n + t.stored, 0);
  say("Every value the devices served, compared with the central table:");
  detail(
    `${"device".padEnd(14)} ${"served".padStart(7)} ${"stored".padStart(7)} ${"lost".padStart(5)} ${"dup".padStart(5)}`,
  );
  for (const t of verdict.tallies) {
    detail(
      `${t.deviceId.padEnd(14)} ${String(t.served).padStart(7)} ${String(t.stored).padStart(7)} ${
        String(t.lost).padStart(5)
      } ${String(t.duplicated).padStart(5)}`,
    );
  }
  detail(`rows sharing (device, metric, timestamp, labels) with another: ${verdict.identityDuplicates}`);
  detail(`delivery ledger: ${verdict.batches} batches, ${verdict.ledgerGaps} missing seq ranges`);
  console.log(
    `\nResult: ${served.total} samples polled, ${storedTotal} in the central table, lost ${lost}, duplicated ${duplicated}`,
  );
  return lost === 0 && duplicated === 0 && verdict.ledgerGaps === 0 && served.total > 0 ? 0 : 1;
}

function describeLatest(latest: LatestSample[]): string {
  return latest.map((s) => `${s.deviceId} ${s.metricId}=${s.value}`).join(", ") || "-";
}

interface StatusJson {
  spool_id: string | null;
  spool_rows: number;
  spool_bytes: number;
  oldest_unsent_age_s: number | null;
}

async function status(cli: KwollectorCli): Promise<StatusJson> {
  const out = await cli.output("status", ["--json"]);
  if (out.code !== 0) throw new Error(`kwollector status failed (exit ${out.code}): ${out.stderr.trim()}`);
  return JSON.parse(out.stdout) as StatusJson;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (err) {
    console.error(`\nDemo failed: ${(err as Error).message}`);
    code = 1;
  }
  Deno.exit(code);
}
