/**
 * SNMP benchmarks (reference/performance.md rows 6 and 7). Prints one JSON line per figure (see
 * report.ts). About 40 s in all.
 *
 * 1. Throughput: 8 poll groups of 200 OIDs (GETs of 50 OIDs) polled back to back for 5 s
 *    against a local snmpd: OIDs read per second, and the collector's CPU time per 1,000
 *    samples (the source plus the scheduler's sample conversion; snmpd's CPU not counted).
 * 2. Fleet fairness: 1,000 simulated agents (net-snmp Agents in a child process) × 20 OIDs every
 *    5 s, 10% of them dead (nobody listens on their port), polled for 20 s by the real Scheduler.
 *    A healthy poll is on time when it completes at most 100 ms after its slot (the polls at
 *    start included). The collector's CPU is measured over the last 15 s, on the grid.
 *
 *   deno run -A scripts/bench/snmp.ts
 *   BENCH_ONLY=fleet deno run -A scripts/bench/snmp.ts        (the fleet alone; `throughput`: 1. alone)
 */
import process from "node:process";
import { type Clock, systemClock, type TimerId } from "../../src/clock.ts";
import { buildGroups, type PollGroup, protocolsOf } from "../../src/collect/groups.ts";
import { Scheduler, toSample } from "../../src/collect/scheduler.ts";
import type { MetricEntry } from "../../src/config/metrics_dir.ts";
import { setLogLevel } from "../../src/log.ts";
import { batchSize } from "../../src/sample.ts";
import { snmp } from "../../src/sources/snmp/snmp.ts";
import type { Source } from "../../src/sources/source.ts";
import { testConfig } from "../harness/config.ts";
import { entryFor } from "../harness/entries.ts";
import { boundUdpPorts, freeUdpPort, OIDS, startSnmpd } from "../peers/snmpd.ts";
import { percentile, report } from "./report.ts";

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function throughput(): Promise<void> {
  const GROUPS = 8;
  const DURATION_MS = 5000;
  const agent = await startSnmpd();
  const config = testConfig({ snmp_max_oids_per_request: 50 });
  try {
    const entries = Array.from(
      { length: OIDS.seriesCount },
      (_, i) => entryFor(`snmp://public@127.0.0.1:${agent.port}/${OIDS.series(i + 1)}`, { name: `s${i}` }),
    );
    const sources = Array.from({ length: GROUPS }, () => snmp.create(entries, { options: config, timeoutMs: 2000 }));
    let samples = 0;
    let polls = 0;
    let errors = 0;
    const loop = async (source: Source, until: number, counting: boolean) => {
      while (performance.now() < until) {
        const sent = Date.now();
        const result = await source.poll(entries, AbortSignal.timeout(2000));
        const converted = result.readings.map((r) => toSample(r, sent));
        if (!counting) continue;
        samples += converted.length;
        errors += result.errors.length;
        polls++;
      }
    };
    await Promise.all(sources.map((s) => loop(s, performance.now() + 500, false)));
    const cpu0 = cpuMs();
    const t0 = performance.now();
    await Promise.all(sources.map((s) => loop(s, t0 + DURATION_MS, true)));
    const elapsedS = (performance.now() - t0) / 1000;
    const cpu = cpuMs() - cpu0;
    await Promise.all(sources.map((s) => s.close()));
    if (errors > 0) throw new Error(`Throughput run had ${errors} entry errors`);
    report({
      name: "snmp_oids_per_s",
      figure: `SNMP v2c against a local snmpd: OIDs read per second (${GROUPS} groups of ${entries.length} OIDs, ` +
        `GETs of 50 OIDs, back to back)`,
      value: samples / elapsedS,
      unit: "OIDs/s",
      goal: { op: ">=", value: 100_000 },
    });
    report({
      name: "snmp_gets_per_s",
      figure: "SNMP: GET requests of 50 OIDs per second",
      value: (polls * Math.ceil(entries.length / 50)) / elapsedS,
      unit: "GETs/s",
    });
    report({
      name: "snmp_cpu_ms_per_1000_samples",
      figure: "SNMP: collector CPU per 1,000 samples (source and sample conversion; snmpd not counted)",
      value: cpu / (samples / 1000),
      unit: "ms",
      goal: { op: "<=", value: 5 },
    });
  } finally {
    await agent.stop();
  }
}

/**
 * A clock that tells which slot a timer callback stands for: while the callback of a timer
 * runs, `firing` is the monotonic time it was due. The scheduler calls a source's poll()
 * synchronously from its slot timer, so the source can note its slot.
 */
function slotClock(): Clock & { firing(): number | undefined } {
  let firing: number | undefined;
  return {
    now: systemClock.now,
    monotonic: systemClock.monotonic,
    setTimeout(fn: () => void, ms: number): TimerId {
      const due = performance.now() + Math.max(0, ms);
      return systemClock.setTimeout(() => {
        firing = due;
        try {
          fn();
        } finally {
          firing = undefined;
        }
      }, ms);
    },
    clearTimeout: systemClock.clearTimeout,
    firing: () => firing,
  };
}

async function fleet(): Promise<void> {
  const AGENTS = 1000;
  const DEAD = 100;
  const OIDS_PER_AGENT = 20;
  const PERIOD_MS = 5000;
  const DURATION_MS = 15_000;
  const LATE_MS = 100;
  const ports: number[] = [];
  const seen = new Set<number>();
  while (ports.length < AGENTS) {
    const p = await freeUdpPort();
    if (!seen.has(p)) ports.push(p), seen.add(p);
  }
  const live = ports.slice(0, AGENTS - DEAD);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./snmp_agents.ts", import.meta.url).pathname,
      "--oids",
      String(OIDS_PER_AGENT),
      ...live.map(String),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    for (let i = 0;; i++) {
      const bound = await boundUdpPorts();
      if (live.every((p) => bound.has(p))) break;
      if (i > 600) throw new Error("Simulated agents did not all listen within 30 s");
      await new Promise((r) => setTimeout(r, 50));
    }
    const liveSet = new Set(live);
    const entries: MetricEntry[] = ports.flatMap((port) =>
      Array.from(
        { length: OIDS_PER_AGENT },
        (_, n) =>
          entryFor(`snmp://public@127.0.0.1:${port}/1.3.6.1.4.1.99999.1.${n + 1}.0`, {
            name: `g${n + 1}`,
            deviceId: `agent-${port}`,
            updateEveryMs: PERIOD_MS,
          }),
      )
    );
    const config = testConfig();
    const { groups, problems } = buildGroups(entries, config, await protocolsOf(entries));
    if (problems.length > 0 || groups.length !== AGENTS) {
      throw new Error(`Unexpected groups: ${problems.length} problems`);
    }
    const clock = slotClock();
    const polls: { healthy: boolean; dueMs: number; lateMs: number; ok: boolean }[] = [];
    const measured = groups.map((g): PollGroup => ({
      ...g,
      open(ctx) {
        const inner = g.open(ctx);
        const healthy = liveSet.has(g.entries[0]!.target.port!);
        return {
          async poll(e, signal) {
            const dueMs = clock.firing() ?? performance.now();
            let ok = false;
            try {
              const result = await inner.poll(e, signal);
              ok = result.errors.length === 0;
              return result;
            } finally {
              polls.push({ healthy, dueMs, lateMs: performance.now() - dueMs, ok });
            }
          },
          close: () => inner.close(),
        };
      },
    }));
    let delivered = 0;
    const scheduler = new Scheduler({
      groups: measured,
      config,
      clock,
      deliver: (samples) => {
        delivered += batchSize(samples);
        return Promise.resolve();
      },
    });
    const t0 = performance.now();
    scheduler.start();
    // The CPU is measured on the grid, after the polls at start (a one-off: each group polled
    // once, spread over the first seconds); the polls at start are on time or not like the others.
    await new Promise((r) => setTimeout(r, PERIOD_MS));
    const cpu0 = cpuMs();
    const delivered0 = delivered;
    const t1 = performance.now();
    await new Promise((r) => setTimeout(r, DURATION_MS));
    const cpu = cpuMs() - cpu0;
    const elapsed = performance.now() - t1;
    const deliveredOnGrid = delivered - delivered0;
    await scheduler.stop();
    const healthy = polls.filter((p) => p.healthy && p.dueMs >= t0 && p.dueMs < t1 + DURATION_MS);
    const onTime = healthy.filter((p) => p.ok && p.lateMs <= LATE_MS).length;
    const p99 = percentile(healthy.map((p) => p.lateMs), 99);
    report({
      name: "snmp_fleet_on_time_fraction",
      figure: `SNMP fleet: ${AGENTS} simulated agents × ${OIDS_PER_AGENT} OIDs every ${PERIOD_MS / 1000} s, ` +
        `${DEAD} dead: healthy polls done ≤ ${LATE_MS} ms after their slot (${healthy.length} polls)`,
      value: onTime / healthy.length,
      unit: "fraction",
      goal: { op: ">=", value: 0.999 },
    });
    report({
      name: "snmp_fleet_p99_completion_after_slot_ms",
      figure: "SNMP fleet: p99 completion time of a healthy poll after its slot",
      value: p99,
      unit: "ms",
      goal: { op: "<=", value: LATE_MS },
    });
    report({
      name: "snmp_fleet_cpu_percent_of_one_core",
      figure:
        `SNMP fleet: collector CPU on the grid (${deliveredOnGrid} samples delivered in ${DURATION_MS / 1000} s ` +
        `after the first ${PERIOD_MS / 1000} s)`,
      value: 100 * cpu / elapsed,
      unit: "% of one core",
      goal: { op: "<=", value: 10 },
    });
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

// The dead agents' poll failures are expected here; only data loss would matter.
setLogLevel("error");
const only = Deno.env.get("BENCH_ONLY");
if (only !== undefined && only !== "throughput" && only !== "fleet") {
  throw new Error(`Cannot parse BENCH_ONLY '${only}': expected 'throughput' or 'fleet'`);
}
if (only !== "fleet") await throughput();
if (only !== "throughput") await fleet();
