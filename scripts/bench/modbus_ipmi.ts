/**
 * Modbus and IPMI benchmarks (reference/performance.md rows 8 and 9). Prints one JSON line per
 * figure (see report.ts). About 30 s in all.
 *
 * 1. Modbus throughput: 200 simulated devices (one pymodbus process serving 200 Modbus TCP
 *    ports), one source and persistent connection each, 10 registers per device read as one
 *    block, polled back to back for 5 s: block reads per second, and the collector's CPU time
 *    per 1,000 samples (the source plus the scheduler's sample conversion; pymodbus not counted).
 * 2. Modbus on schedule: the same 200 devices in the real Scheduler every 380 ms (526 block
 *    reads/s asked, above the goal of 500) for 6 s: reads/s achieved, the p99 jitter of the interval between two
 *    samples of one device on its grid (|interval − period|; the poll at start is not on the grid),
 *    and how many intervals were under half a period (one slot polled twice).
 * 3. IPMI: 10 simulated BMCs (ipmi_sim), 4 sensors each read by record ID, polled back to back
 *    for 5 s: poll latency p50/p99 (one ipmi-sensors run each), and CPU time per 1,000 samples,
 *    of the collector alone and with its ipmi-sensors children (ipmi_sim not counted).
 *
 *   deno run -A scripts/bench/modbus_ipmi.ts
 */
import process from "node:process";
import { systemClock } from "../../src/clock.ts";
import { buildGroups, protocolsOf } from "../../src/collect/groups.ts";
import { Scheduler, toSample } from "../../src/collect/scheduler.ts";
import type { MetricEntry } from "../../src/config/metrics_dir.ts";
import { type Sample, samplesOf } from "../../src/sample.ts";
import { setLogLevel } from "../../src/log.ts";
import { ipmi } from "../../src/sources/ipmi/ipmi.ts";
import { modbus } from "../../src/sources/modbus/modbus.ts";
import type { Source } from "../../src/sources/source.ts";
import { testConfig } from "../harness/config.ts";
import { entryFor } from "../harness/entries.ts";
import { startIpmiSim } from "../peers/ipmi_sim.ts";
import { startPymodbus } from "../peers/pymodbus.ts";
import { percentile, report } from "./report.ts";

/** CPU time of this process, and of its waited-for children (clock ticks of /proc/self/stat). */
function cpuMs(): { self: number; children: number } {
  const u = process.cpuUsage();
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 16 and 17 of stat(5) (cutime, cstime) are the 14th and 15th after the comm.
  const ticks = Number(fields[13]) + Number(fields[14]);
  return { self: (u.user + u.system) / 1000, children: ticks * 10 };
}

/** Polls every source back to back until `until`; returns polls, samples and entry errors. */
async function closedLoop(
  sources: { source: Source; entries: MetricEntry[] }[],
  until: number,
  latencies?: number[],
): Promise<{ polls: number; samples: number; errors: number }> {
  const totals = { polls: 0, samples: 0, errors: 0 };
  await Promise.all(sources.map(async ({ source, entries }) => {
    while (performance.now() < until) {
      const sent = Date.now();
      const started = performance.now();
      const result = await source.poll(entries, AbortSignal.timeout(5000));
      latencies?.push(performance.now() - started);
      totals.samples += result.readings.map((r) => toSample(r, sent)).length;
      totals.errors += result.errors.length;
      totals.polls++;
    }
  }));
  return totals;
}

const DEVICES = 200;
const REGISTERS = 10;

function modbusEntries(ports: number[], periodMs: number): MetricEntry[] {
  return ports.flatMap((port) =>
    Array.from({ length: REGISTERS }, (_, r) =>
      entryFor(`modbus://127.0.0.1:${port}/1/${r}/be_u16`, {
        name: `r${r}`,
        deviceId: `meter-${port}`,
        updateEveryMs: periodMs,
      }))
  );
}

async function modbusBench(): Promise<void> {
  const raw = [{ table: "holding" as const, address: 0, registers: Array.from({ length: REGISTERS }, (_, i) => i) }];
  const server = await startPymodbus({ raw, tcpPorts: DEVICES });
  const config = testConfig();
  try {
    // 1. Throughput, back to back.
    const byDevice = server.tcpPorts.map((port) => modbusEntries([port], 1000));
    const sources = byDevice.map((entries) => ({
      source: modbus.create(entries, { options: config, timeoutMs: 5000 }),
      entries,
    }));
    await closedLoop(sources, performance.now() + 1000); // connect and warm up
    const cpu0 = cpuMs();
    const t0 = performance.now();
    const run = await closedLoop(sources, t0 + 5000);
    const elapsedS = (performance.now() - t0) / 1000;
    const cpu = cpuMs().self - cpu0.self;
    await Promise.all(sources.map((s) => s.source.close()));
    if (run.errors > 0) throw new Error(`Modbus throughput run had ${run.errors} entry errors`);
    report({
      name: "modbus_block_reads_per_s",
      figure: `Modbus TCP block reads per second, back to back (${DEVICES} simulated devices, ${REGISTERS} ` +
        `registers each, one connection each)`,
      value: run.polls / elapsedS,
      unit: "reads/s",
      goal: { op: ">=", value: 500 },
    });
    report({
      name: "modbus_cpu_ms_per_1000_samples",
      figure: "Modbus: collector CPU per 1,000 samples (pymodbus not counted)",
      value: cpu / (run.samples / 1000),
      unit: "ms",
    });

    // 2. On schedule.
    const PERIOD_MS = 380;
    const entries = modbusEntries(server.tcpPorts, PERIOD_MS);
    const { groups, problems } = buildGroups(entries, config, await protocolsOf(entries));
    if (problems.length > 0 || groups.length !== DEVICES) throw new Error("Unexpected Modbus groups");
    const samples: Sample[] = [];
    const scheduler = new Scheduler({
      groups,
      config,
      clock: systemClock,
      deliver: (s) => {
        samples.push(...samplesOf(s));
        return Promise.resolve();
      },
    });
    const s0 = performance.now();
    scheduler.start();
    await new Promise((r) => setTimeout(r, 6000));
    // The polls counted are those started in the window; stop() waits for the last ones.
    const seconds = (performance.now() - s0) / 1000;
    await scheduler.stop();
    const counters = scheduler.counters().map((c) => c.counters);
    const failed = counters.reduce((n, c) => n + c.pollsFailed, 0);
    // Intervals between grid slots: a device's first sample is its poll at start, which is off
    // the grid by design (the first slot comes half a period to a period and a half after it).
    const intervals: number[] = [];
    const last = new Map<string, number | undefined>();
    for (const s of samples.filter((x) => x.metricId === "r0")) {
      const previous = last.get(s.deviceId);
      if (previous !== undefined) intervals.push(s.timestampMs - previous);
      last.set(s.deviceId, last.has(s.deviceId) ? s.timestampMs : undefined);
    }
    const jitter = intervals.map((i) => Math.abs(i - PERIOD_MS));
    report({
      name: "modbus_scheduled_reads_per_s",
      figure: `Modbus on schedule: block reads per second (${DEVICES} devices every ${PERIOD_MS} ms, ` +
        `${failed} failed polls)`,
      value: counters.reduce((n, c) => n + c.pollsOk, 0) / seconds,
      unit: "reads/s",
      goal: { op: ">=", value: 500 },
    });
    report({
      name: "modbus_interval_jitter_p99_ms",
      figure: "Modbus on schedule: p99 of |interval between two samples of a device − period|",
      value: percentile(jitter, 99),
      unit: "ms",
      goal: { op: "<=", value: 50 },
    });
    // Two polls of one device less than half a period apart: a slot polled twice.
    report({
      name: "modbus_double_polls",
      figure: `Modbus on schedule: slots polled twice (intervals under half a period, of ${intervals.length})`,
      value: intervals.filter((i) => i < PERIOD_MS / 2).length,
      unit: "intervals",
      goal: { op: "==", value: 0 },
    });
  } finally {
    await server.stop();
  }
}

async function ipmiBench(): Promise<void> {
  const BMCS = 10;
  const SENSORS = [2, 3, 4, 5];
  const sims = [];
  try {
    for (let i = 0; i < BMCS; i++) sims.push(await startIpmiSim({ username: "admin", password: "bench-pass" }));
    const config = testConfig();
    const sources = sims.map((sim) => {
      const entries = SENSORS.map((id) =>
        entryFor(`ipmisensor://admin:bench-pass@127.0.0.1:${sim.port}/${id}?workaround_flags=opensesspriv`, {
          name: `sensor_${id}`,
        })
      );
      return { source: ipmi.create(entries, { options: config, timeoutMs: 5000 }), entries };
    });
    await closedLoop(sources, performance.now() + 500); // SDR caches filled
    const latencies: number[] = [];
    const cpu0 = cpuMs();
    const run = await closedLoop(sources, performance.now() + 5000, latencies);
    const cpu1 = cpuMs();
    await Promise.all(sources.map((s) => s.source.close()));
    if (run.errors > 0) throw new Error(`IPMI run had ${run.errors} entry errors`);
    const perThousand = (ms: number) => ms / (run.samples / 1000);
    report({
      name: "ipmi_poll_latency_p50_ms",
      figure: `IPMI poll latency p50 (${BMCS} simulated BMCs, ${SENSORS.length} sensors each, back to back; ` +
        `real BMCs: 0.5–3 s expected)`,
      value: percentile(latencies, 50),
      unit: "ms",
    });
    report({
      name: "ipmi_poll_latency_p99_ms",
      figure: "IPMI poll latency p99",
      value: percentile(latencies, 99),
      unit: "ms",
    });
    report({
      name: "ipmi_cpu_ms_per_1000_samples",
      figure: "IPMI: collector CPU per 1,000 samples (collector only)",
      value: perThousand(cpu1.self - cpu0.self),
      unit: "ms",
    });
    report({
      name: "ipmi_cpu_ms_per_1000_samples_with_children",
      figure: "IPMI: CPU per 1,000 samples, collector and its ipmi-sensors processes (process start dominates)",
      value: perThousand(cpu1.self - cpu0.self + cpu1.children - cpu0.children),
      unit: "ms",
    });
  } finally {
    await Promise.all(sims.map((s) => s.stop()));
  }
}

setLogLevel("error");
await modbusBench();
await ipmiBench();
