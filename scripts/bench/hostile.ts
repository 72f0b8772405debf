/**
 * Hostile input (issue 11): the real collector (`kwollector run` with the V8 flags of the
 * `kwollector` task: a 64 MB heap) against a real PostgreSQL, polling at the same time
 *
 * - a wide exporter: 50,000 series of one metric, every 5 s (10,000 samples/s);
 * - a 16 MB JSON document (Redfish-shaped: about 83,000 sensor members) over HTTP, every 10 s,
 *   read by two entries (the first and the last member);
 * - a metrics.d file of 5,000 entries, each its own device reading its own metric from one
 *   exporter of 5,000 metric names, every 10 s;
 * - one ordinary device, a one-series exporter polled every second.
 *
 * For MEASURE_S after WARMUP_S: the collector's peak RSS (VmHWM from /proc, which also covers the
 * start and the warm-up) and the ordinary device's schedule. The schedule is measured from the
 * outside: the ordinary exporter notes the arrival time of every request, and each slot of its
 * group's grid (phase + k × 1000 ms, wall clock, see scheduler.ts) counts as on time when a
 * request arrived within 100 ms of it. Arrival includes the time the collector took to send the
 * request, so it is the stricter measure; the collector's stored timestamps are taken before the
 * request is sent: the two are reported apart too (the timer's lateness, and the time the
 * event loop held the request once the poll had started), to tell which one made a slot late.
 * What became of the hostile devices (samples delivered centrally, the last error `kwollector
 * status` shows) is printed too, so a figure met by refusing everything shows.
 * About 90 s.
 *
 *   deno run -A scripts/bench/hostile.ts
 *   BENCH_ONLY=document deno run -A scripts/bench/hostile.ts   (the 1 s device and the hostile
 *                                   sources named, comma-separated: wide, document, file)
 *   BENCH_FILE_ENTRIES=20000 deno run -A scripts/bench/hostile.ts   (more entries than the
 *                                   default 5,000, in files of at most 5,000: `metrics_max_entries`
 *                                   is 20,000, the most a heap limit must hold beside the rest)
 */
import { phaseOf } from "../../src/collect/scheduler.ts";
import { setLogSink } from "../../src/log.ts";
import { kwollector, sleep } from "../harness/collector.ts";
import { metricsEntry } from "../harness/config.ts";
import { destroyPostgres } from "../peers/postgres.ts";
import { percentile, report } from "./report.ts";
import { collectorV8Flags, spawnCollector, startBenchCentral, startPowerExporter } from "./collector.ts";

setLogSink(() => {});
const WARMUP_S = 10;
const MEASURE_S = 60;
const WIDE_SERIES = 50_000;
const WIDE_PERIOD_MS = 5000;
const FILE_ENTRIES = fileEntries();
/** Entries per metrics.d file: `metrics_file_max_entries`' default. */
const ENTRIES_PER_FILE = 5_000;
const DOCUMENT_BYTES = 16_000_000;
const ORDINARY_PERIOD_MS = 1000;
const ON_TIME_MS = 100;
const count = new Intl.NumberFormat("en-US");
const HOSTILE_SOURCES = ["wide", "document", "file"] as const;
type HostileSource = (typeof HOSTILE_SOURCES)[number];

/** Entries of the metrics.d files: 5,000, or BENCH_FILE_ENTRIES. */
function fileEntries(): number {
  const text = Deno.env.get("BENCH_FILE_ENTRIES");
  if (text === undefined) return 5_000;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`Cannot parse BENCH_FILE_ENTRIES '${text}': expected a whole number of entries from 1`);
  }
  return n;
}

/** The hostile sources in metrics.d: all of them, or those BENCH_ONLY names. */
function selectedSources(): Set<HostileSource> {
  const only = Deno.env.get("BENCH_ONLY");
  if (only === undefined) return new Set(HOSTILE_SOURCES);
  const names = only.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const unknown = names.filter((s) => !(HOSTILE_SOURCES as readonly string[]).includes(s));
  if (unknown.length > 0) {
    throw new Error(`Cannot parse BENCH_ONLY '${only}': expected some of ${HOSTILE_SOURCES.join(", ")}`);
  }
  return new Set(names as HostileSource[]);
}

/**
 * A Redfish-shaped JSON document of sensor members, as many as fit in `bytes`, served as is on
 * 127.0.0.1.
 */
function startDocumentServer(bytes: number): { port: number; bytes: number; shutdown(): Promise<void> } {
  const head = '{"@odata.id":"/redfish/v1/Chassis/1/Sensors","Name":"Sensors","Members":[';
  const members: string[] = [];
  let size = head.length + 2;
  for (let i = 0;; i++) {
    const member = JSON.stringify({
      "@odata.id": `/redfish/v1/Chassis/1/Sensors/${i}`,
      Id: String(i),
      Name: `Sensor ${i}`,
      ReadingType: "Temperature",
      Reading: 20 + (i % 40) / 2,
      ReadingUnits: "Cel",
      Status: { State: "Enabled", Health: "OK" },
    });
    if (size + member.length + 1 > bytes) break;
    members.push(member);
    size += member.length + 1;
  }
  const body = new TextEncoder().encode(`${head}${members.join(",")}]}`);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(body, { headers: { "content-type": "application/json" } }),
  );
  return { port: server.addr.port, bytes: body.length, shutdown: () => server.shutdown() };
}

function metricsFiles(
  ports: { wide: number; fleet: number; document: number; ordinary: number },
  sources: Set<HostileSource>,
): Record<string, string> {
  const entry = (name: string, deviceId: string, url: string, updateEveryMs: number) =>
    metricsEntry({ name, deviceId, url, updateEveryMs });
  const fleet: string[] = [];
  for (let i = 0; i < FILE_ENTRIES; i++) {
    fleet.push(entry("p", `fleet-${i}`, `prometheus://127.0.0.1:${ports.fleet}/node_power_watt_${i}`, 10_000));
  }
  const sensors = `http://127.0.0.1:${ports.document}/redfish/v1/Chassis/1/Sensors`;
  const files: Record<string, string> = {
    "ordinary.yaml": entry("p", "ordinary-1", `prometheus://127.0.0.1:${ports.ordinary}/node_power_watt`, 1000),
  };
  if (sources.has("wide")) {
    files["wide.yaml"] = entry("p", "wide-1", `prometheus://127.0.0.1:${ports.wide}/node_power_watt`, WIDE_PERIOD_MS);
  }
  if (sources.has("file")) {
    for (let from = 0; from < fleet.length; from += ENTRIES_PER_FILE) {
      files[`fleet-${from / ENTRIES_PER_FILE}.yaml`] = fleet.slice(from, from + ENTRIES_PER_FILE).join("");
    }
  }
  if (sources.has("document")) {
    files["bmc.yaml"] = entry("first", "bmc-1", `${sensors}#Members[0].Reading`, 10_000) +
      entry("last", "bmc-1", `${sensors}#Members[-1].Reading`, 10_000);
  }
  return files;
}

/** VmHWM (peak resident memory since the start) of a process, in MB. */
function peakRssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
}

/**
 * Lateness of each slot of the grid in [fromMs, toMs): the distance from the slot to the first
 * request that arrived within half a period of it, Infinity when none did.
 */
function slotLateness(arrivals: number[], phaseMs: number, periodMs: number, fromMs: number, toMs: number) {
  const bySlot = new Map<number, number>();
  for (const at of arrivals) {
    const k = Math.round((at - phaseMs) / periodMs);
    const late = at - (phaseMs + k * periodMs);
    if (!bySlot.has(k) || Math.abs(late) < Math.abs(bySlot.get(k)!)) bySlot.set(k, late);
  }
  const out: number[] = [];
  for (let k = Math.ceil((fromMs - phaseMs) / periodMs); phaseMs + k * periodMs < toMs; k++) {
    out.push(bySlot.get(k) ?? Infinity);
  }
  return out;
}

const sources = selectedSources();
const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-hostile-" });
const pg = await startBenchCentral();
const wide = startPowerExporter({ series: WIDE_SERIES });
const fleet = startPowerExporter({ series: FILE_ENTRIES, namePerSeries: true });
const ordinary = startPowerExporter({ series: 1 });
const document = startDocumentServer(DOCUMENT_BYTES);
try {
  const flags = {
    metrics_dir: `${dir}/metrics.d`,
    spool_path: `${dir}/spool/spool.db`,
    db_host: "127.0.0.1",
    db_port: String(pg.port),
    db_sslmode: "disable",
  };
  await Deno.mkdir(flags.metrics_dir, { recursive: true });
  const ports = { wide: wide.port, fleet: fleet.port, document: document.port, ordinary: ordinary.port };
  const files = metricsFiles(ports, sources);
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(`${flags.metrics_dir}/${name}`, text);
  const args = Object.entries(flags).flatMap(([k, v]) => [`--${k}`, v]);
  const startedMs = Date.now();
  const child = spawnCollector(args);
  const pid = await child.pid();
  /** Set when the collector exits before it is stopped. */
  let exit: Deno.CommandStatus | undefined;
  let stopping = false;
  child.status.then((s) => {
    if (!stopping) exit = s;
  });
  let peak = NaN;
  try {
    for (let s = 0; s < WARMUP_S + MEASURE_S && exit === undefined; s++) {
      await sleep(1000);
      if (exit === undefined) peak = peakRssMb(pid);
    }
  } finally {
    stopping = true;
    await child.stop();
  }
  /** When each request of the ordinary device reached its exporter (ms since the epoch). */
  const arrivals = Array.from({ length: ordinary.served() }, (_, i) => ordinary.servedAt(i + 1)!.wallMs);
  const fromMs = startedMs + WARMUP_S * 1000;
  const toMs = startedMs + (WARMUP_S + MEASURE_S) * 1000;
  const phase = phaseOf(`prometheus://127.0.0.1:${ordinary.port}|${ORDINARY_PERIOD_MS}`, ORDINARY_PERIOD_MS);
  const lateness = slotLateness(arrivals, phase, ORDINARY_PERIOD_MS, fromMs, toMs);
  const onTime = lateness.filter((l) => Math.abs(l) <= ON_TIME_MS).length;

  const admin = pg.admin("kwdb");
  const stamps = await admin`
    SELECT extract(epoch FROM timestamp)::float8 * 1000 AS ms FROM metrics WHERE device_id = 'ordinary-1'`;
  const started = slotLateness(stamps.map((r) => r.ms as number), phase, ORDINARY_PERIOD_MS, fromMs, toMs);
  /** Per slot polled, from the poll's start (its samples' timestamp) to its request's arrival. */
  const held = lateness.map((l, i) => l - started[i]!).filter(Number.isFinite);
  const startedFinite = started.filter(Number.isFinite);
  const rows = await admin`
    SELECT device_id, count(*)::int AS n FROM metrics
    WHERE device_id IN ('wide-1', 'bmc-1', 'fleet-0', 'ordinary-1') GROUP BY device_id`;
  const delivered = Object.fromEntries(rows.map((r) => [r.device_id as string, r.n as number]));
  const status = await kwollector(["status", "--json", ...args]);
  const devices = (JSON.parse(status.stdout).devices ?? []) as {
    device_id: string;
    last_error: string | null;
  }[];
  const errors = Object.fromEntries(
    devices.filter((d) => ["wide-1", "bmc-1", "fleet-0", "ordinary-1"].includes(d.device_id))
      .map((d) => [d.device_id, d.last_error]),
  );
  console.error(
    `collector ${exit ? `exited on its own with code ${exit.code}${exit.signal ? ` (${exit.signal})` : ""}` : "ran"}` +
      ` with ${collectorV8Flags().join(" ")}; document ${count.format(document.bytes)} bytes; ` +
      `wide exporter scraped ${wide.served()} times; central rows ${JSON.stringify(delivered)}; ` +
      `last errors ${JSON.stringify(errors)}`,
  );
  const conditions = [
    sources.has("wide") ? `${count.format(WIDE_SERIES)}-series exporter every ${WIDE_PERIOD_MS / 1000} s` : "",
    sources.has("document") ? `${(document.bytes / 1e6).toFixed(1)} MB JSON document every 10 s` : "",
    sources.has("file")
      ? FILE_ENTRIES <= ENTRIES_PER_FILE
        ? `${count.format(FILE_ENTRIES)}-entry metrics.d file every 10 s`
        : `${count.format(FILE_ENTRIES)} metrics.d entries (files of ${count.format(ENTRIES_PER_FILE)}) every 10 s`
      : "",
    "one device every 1 s",
  ].filter((c) => c !== "").join(", ");
  report({
    name: "hostile_rss_max",
    figure: `collector peak RSS (VmHWM, start included) with a 64 MB heap under hostile input: ${conditions}`,
    value: peak,
    unit: "MB",
    goal: { op: "<=", value: 120 },
  });
  report({
    name: "hostile_collector_survived",
    figure: "same run: the collector was still running when stopped (1), or died on its own (0; exit code " +
      `${exit ? `${exit.code}${exit.signal ? `, ${exit.signal}` : ""}` : "none"})`,
    value: exit ? 0 : 1,
    unit: "boolean",
    goal: { op: "==", value: 1 },
  });
  report({
    name: "hostile_ordinary_on_time",
    figure: `same run: slots of the 1 s device (${lateness.length} in ${MEASURE_S} s) whose request reached ` +
      `its exporter within ${ON_TIME_MS} ms`,
    value: lateness.length === 0 ? NaN : onTime / lateness.length,
    unit: "fraction",
    goal: { op: ">=", value: 0.99 },
  });
  const finite = lateness.filter(Number.isFinite);
  report({
    name: "hostile_ordinary_lateness_p99",
    figure: "same run: request arrival after its slot, 1 s device, p99 (missed slots excluded)",
    value: percentile(finite, 99),
    unit: "ms",
  });
  report({
    name: "hostile_ordinary_lateness_max",
    figure: "same run: request arrival after its slot, 1 s device, worst (missed slots excluded)",
    value: finite.length === 0 ? NaN : Math.max(...finite),
    unit: "ms",
  });
  report({
    name: "hostile_ordinary_poll_start_lateness_max",
    figure: "same run: the poll's start (its samples' timestamp) after its slot, 1 s device, worst: the timer late",
    value: startedFinite.length === 0 ? NaN : Math.max(...startedFinite),
    unit: "ms",
  });
  report({
    name: "hostile_ordinary_request_held_max",
    figure: "same run: from the poll's start to its request's arrival at the exporter, 1 s device, worst: " +
      "the event loop busy before the request went out",
    value: held.length === 0 ? NaN : Math.max(...held),
    unit: "ms",
  });
  report({
    name: "hostile_wide_samples_delivered",
    figure: `same run: samples of the ${count.format(WIDE_SERIES)}-series exporter in the central table at the end`,
    value: delivered["wide-1"] ?? 0,
    unit: "samples",
    lastError: errors["wide-1"] ?? null,
  });
  report({
    name: "hostile_document_samples_delivered",
    figure: "same run: samples of the 16 MB document in the central table at the end",
    value: delivered["bmc-1"] ?? 0,
    unit: "samples",
    lastError: errors["bmc-1"] ?? null,
  });
} finally {
  await Promise.all([wide.close(), fleet.close(), ordinary.close(), document.shutdown()]);
  await destroyPostgres(pg);
  await Deno.remove(dir, { recursive: true });
}
