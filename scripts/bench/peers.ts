/**
 * kwollector beside a peer collector on the same input (issue 15, workload A): one exporter of
 * 10,000 series scraped every second for MEASURE_S (60 s by default, `BENCH_PEERS_S`), first by
 * the real collector (`kwollector run`, the bench V8 flags, into a real PostgreSQL), then by
 * Debian's `prometheus` 2.42 in agent mode (`--enable-feature=agent`: scrape, write-ahead log,
 * remote write) sending to a remote-write receiver served by this script. The agent is started
 * and stopped by the bench; when `prometheus` is not installed its figures are left out with a
 * printed notice.
 *
 * For each collector, after WARMUP_S: its process CPU (user + system, /proc) over the window ÷
 * the samples it took in the window, per 1,000 samples; and its peak RSS in the window. Samples
 * are counted by what each one stored: for kwollector the live rows of the window that reached
 * the central table, for the agent the scrapes the exporter served in the window × the series
 * of one scrape (the agent stores every scraped sample in its write-ahead log). The destination's
 * CPU (PostgreSQL, the receiver) is not counted, for either. The receiver answers every write
 * with 204 after reading its body (the snappy-compressed protobuf is not decoded), and the bytes
 * it received are printed so a run where the agent sent nothing shows.
 *
 * Workload B (SNMP, kwollector alone: no SNMP peer collector is packaged here): one local snmpd,
 * 200 OIDs (one entry each) polled every second for MEASURE_S; the collector's CPU per 1,000 rows
 * of the window that reached the central table, and its peak RSS.
 *
 *   deno run -A scripts/bench/peers.ts
 *   BENCH_ONLY=snmp deno run -A scripts/bench/peers.ts        (workload B alone; `prometheus`: A alone)
 *   BENCH_ONLY=snmp BENCH_V8_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" deno run -A scripts/bench/peers.ts
 */
import { setLogSink } from "../../src/log.ts";
import { report } from "./report.ts";
import {
  LIVE_METRICS,
  liveArrival,
  processCpuMs,
  processRssMb,
  spawnCollector,
  startBenchCentral,
  startLiveRig,
  startPowerExporter,
} from "./collector.ts";
import { sleep } from "../harness/collector.ts";
import { destroyPostgres, freePort } from "../peers/postgres.ts";
import { OIDS, startSnmpd } from "../peers/snmpd.ts";
import { metricsEntry, writeCollectorConfig } from "../harness/config.ts";

setLogSink(() => {});
const WARMUP_S = 5;
const MEASURE_S = Number(Deno.env.get("BENCH_PEERS_S") ?? 60);
const PROMETHEUS = "/usr/bin/prometheus";
const SNMP_DEVICE = "snmp-agent-1";
const workload = `one exporter of ${new Intl.NumberFormat("en-US").format(LIVE_METRICS)} series at 1 s, ${MEASURE_S} s`;

interface Measured {
  cpuMs: number;
  rssMaxMb: number;
}

/** CPU and peak RSS of `pid` over MEASURE_S after WARMUP_S; `atStart` runs when the window opens. */
async function measure(pid: number, atStart = () => {}): Promise<Measured> {
  await sleep(WARMUP_S * 1000);
  atStart();
  const cpu0 = processCpuMs(pid);
  let rssMaxMb = 0;
  for (let s = 0; s < MEASURE_S; s++) {
    await sleep(1000);
    rssMaxMb = Math.max(rssMaxMb, processRssMb(pid));
  }
  return { cpuMs: processCpuMs(pid) - cpu0, rssMaxMb };
}

/**
 * Runs the collector on `yaml` through the warm-up and the window; it stops 3 s after the window,
 * so the window's last samples reach the central table.
 */
async function measureCollector(yaml: string): Promise<{ m: Measured; windowStartMs: number }> {
  const startedMs = Date.now();
  const child = spawnCollector([yaml]);
  try {
    const m = await measure(await child.pid());
    await sleep(3000);
    return { m, windowStartMs: startedMs + WARMUP_S * 1000 };
  } finally {
    await child.stop();
  }
}

async function kwollector(): Promise<{ perK: number; rssMaxMb: number }> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-peers-" });
  try {
    await using rig = await startLiveRig(dir);
    const admin = rig.pg.admin("kwdb");
    const { m, windowStartMs } = await measureCollector(rig.yaml);
    const arrived = await liveArrival(admin, windowStartMs, windowStartMs + MEASURE_S * 1000);
    return { perK: m.cpuMs / (arrived.rows / 1000), rssMaxMb: m.rssMaxMb };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function prometheusAgent(): Promise<{ perK: number; rssMaxMb: number } | undefined> {
  try {
    await Deno.stat(PROMETHEUS);
  } catch {
    console.error(
      `peers: ${PROMETHEUS} is not installed (Debian package 'prometheus'): the agent's figures are left out`,
    );
    return undefined;
  }
  const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-peers-agent-" });
  const exporter = startPowerExporter();
  let received = 0;
  let writes = 0;
  const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    received += (await req.arrayBuffer()).byteLength;
    writes++;
    return new Response(null, { status: 204 });
  });
  try {
    const config = `${dir}/prometheus.yml`;
    await Deno.writeTextFile(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: power",
        "    static_configs:",
        `      - targets: ["127.0.0.1:${exporter.port}"]`,
        "remote_write:",
        `  - url: http://127.0.0.1:${receiver.addr.port}/api/v1/write`,
        "",
      ].join("\n"),
    );
    const agent = new Deno.Command(PROMETHEUS, {
      args: [
        "--enable-feature=agent",
        `--config.file=${config}`,
        `--storage.agent.path=${dir}/wal`,
        `--web.listen-address=127.0.0.1:${freePort()}`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let m: Measured;
    let scrapes = 0;
    try {
      let served0 = 0;
      m = await measure(agent.pid, () => served0 = exporter.served());
      scrapes = exporter.served() - served0;
    } finally {
      agent.kill("SIGTERM");
      await agent.status;
    }
    console.error(
      `peers: the agent made ${scrapes} scrapes in ${MEASURE_S} s, sent ${writes} writes, ${received} bytes`,
    );
    if (received === 0) throw new Error("The Prometheus agent sent nothing to the remote-write receiver");
    return { perK: m.cpuMs / ((scrapes * LIVE_METRICS) / 1000), rssMaxMb: m.rssMaxMb };
  } finally {
    await receiver.shutdown();
    await exporter.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Workload B: 200 OIDs of a local snmpd every second, into the bench PostgreSQL. */
async function kwollectorSnmp(): Promise<{ perK: number; rssMaxMb: number }> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-peers-snmp-" });
  const pg = await startBenchCentral();
  const agent = await startSnmpd();
  try {
    const metrics = Array.from({ length: OIDS.seriesCount }, (_, i) =>
      metricsEntry({
        name: `oid_${i + 1}`,
        deviceId: SNMP_DEVICE,
        url: `snmp://public@127.0.0.1:${agent.port}/${OIDS.series(i + 1)}`,
        updateEveryMs: 1000,
      })).join("");
    const yaml = await writeCollectorConfig(dir, {
      metrics: { "snmp.yaml": metrics },
      settings: { db_host: "127.0.0.1", db_port: pg.port, db_sslmode: "disable", spool_path: `${dir}/spool/spool.db` },
    });
    const { m, windowStartMs } = await measureCollector(yaml);
    const [row] = await pg.admin("kwdb")`
      SELECT count(*)::int AS n FROM metrics WHERE device_id = ${SNMP_DEVICE}
        AND "timestamp" >= ${new Date(windowStartMs)} AND "timestamp" < ${new Date(windowStartMs + MEASURE_S * 1000)}`;
    return { perK: m.cpuMs / ((row as { n: number }).n / 1000), rssMaxMb: m.rssMaxMb };
  } finally {
    await agent.stop();
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
}

const only = Deno.env.get("BENCH_ONLY");
if (only !== undefined && only !== "prometheus" && only !== "snmp") {
  throw new Error(`Cannot parse BENCH_ONLY '${only}': expected 'prometheus' or 'snmp'`);
}
if (only !== "snmp") {
  const ours = await kwollector();
  const agent = await prometheusAgent();
  report({
    name: "peers_kwollector_cpu_per_1k",
    figure: `workload A (${workload}): kwollector CPU per 1,000 samples stored (PostgreSQL's CPU not counted)`,
    value: ours.perK,
    unit: "ms",
    goal: { op: "<=", value: 4 },
  });
  report({
    name: "peers_kwollector_rss_max",
    figure: "workload A: kwollector RSS, max over the window",
    value: ours.rssMaxMb,
    unit: "MB",
    goal: { op: "<=", value: 90 },
  });
  if (agent) {
    report({
      name: "peers_prometheus_agent_cpu_per_1k",
      figure: "workload A: Prometheus 2.42 agent CPU per 1,000 samples scraped (remote-write receiver not counted)",
      value: agent.perK,
      unit: "ms",
    });
    report({
      name: "peers_prometheus_agent_rss_max",
      figure: "workload A: Prometheus 2.42 agent RSS, max over the window",
      value: agent.rssMaxMb,
      unit: "MB",
    });
    report({
      name: "peers_cpu_ratio_to_prometheus_agent",
      figure: "workload A: kwollector CPU per sample / the Prometheus agent's, same run",
      value: ours.perK / agent.perK,
      unit: "ratio",
      goal: { op: "<=", value: 1 },
    });
  }
}
if (only !== "prometheus") {
  const snmpB = await kwollectorSnmp();
  report({
    name: "peers_kwollector_snmp_cpu_per_1k",
    figure: `workload B (one local snmpd, ${OIDS.seriesCount} OIDs at 1 s, ${MEASURE_S} s): kwollector CPU per 1,000 ` +
      "samples stored (PostgreSQL's and snmpd's CPU not counted)",
    value: snmpB.perK,
    unit: "ms",
    goal: { op: "<=", value: 45 },
  });
  report({
    name: "peers_kwollector_snmp_rss_max",
    figure: "workload B: kwollector RSS, max over the window",
    value: snmpB.rssMaxMb,
    unit: "MB",
  });
}
