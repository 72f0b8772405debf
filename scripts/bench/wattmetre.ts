/**
 * Benchmark: a wattmeter stream (48 ports at 50 Hz, a quarter of the nodes promoted to raw
 * samples) read from memory into a real spool in a temporary directory, until every sample is
 * durable. Prints one JSON line (see report.ts): input samples (port readings) per second of wall
 * time. The goal is 5000 samples/s, a 100-channel wattmeter at 50 Hz.
 *
 *   deno run -A scripts/bench/wattmetre.ts [SECONDS of stream, default 600]
 */
import { openSpool } from "../../src/spool/spool.ts";
import { WattmetreReader } from "../../src/collect/wattmetre_reader.ts";
import { report } from "./report.ts";

const PORTS = 48;
const HZ = 50;
const SECONDS = Number(Deno.args[0] ?? 600);
const T0 = 1767225600;

const mapping = new Map<string, string[]>();
const promoted = new Set<string>();
for (let p = 0; p < PORTS; p++) {
  const node = `taurus-${Math.floor(p / 2) + 1}`;
  mapping.set(`wattmetre1-port${p}`, [node]);
  if (p < PORTS / 4) promoted.add(node);
}

const lines: string[] = [];
for (let k = 0; k < SECONDS * HZ; k++) {
  const fields = ["0x2a", String(k), ((T0 * HZ + k) / HZ).toFixed(6), "OK"];
  for (let p = 0; p < PORTS; p++) fields.push((100 + p + (k % 13) * 0.37).toFixed(2));
  lines.push(fields.join(","));
}

const dir = await Deno.makeTempDir({ prefix: "kwollector-bench-wattmetre-" });
const spool = openSpool({
  path: `${dir}/spool.db`,
  maxBytes: 4 * 1024 ** 3,
  fullPolicy: "drop_oldest",
  synchronous: "full",
  commitIntervalMs: 100,
});
try {
  const reader = new WattmetreReader({
    wattmetreId: "wattmetre1",
    mapping,
    isPromoted: (node) => promoted.has(node),
    deliver: (samples) => spool.writer.append(samples),
  });
  const started = performance.now();
  for (const line of lines) await reader.pushLine(line);
  await reader.end();
  const elapsedS = (performance.now() - started) / 1000;
  const inputSamples = SECONDS * HZ * PORTS;
  if (reader.counters.samplesLost > 0) throw new Error(`${reader.counters.samplesLost} samples lost`);
  console.error(
    `${inputSamples} readings -> ${reader.counters.samplesAcknowledged} spooled samples in ${elapsedS.toFixed(2)} s`,
  );
  report({
    name: "wattmetre_lines",
    figure: `wattmeter stream, ${PORTS} ports × ${HZ} Hz (${SECONDS} s of stream) read from memory into a ` +
      `durable spool: port readings per second`,
    value: inputSamples / elapsedS,
    unit: "samples/s",
    goal: { op: ">=", value: 5000 },
  });
} finally {
  spool.close();
  await Deno.remove(dir, { recursive: true });
}
