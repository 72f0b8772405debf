import assert from "node:assert/strict";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import type { Sample } from "../../src/sample.ts";
import { pumpWattmetreStream, WATTMETRE_METRIC, WattmetreReader } from "../../src/collect/wattmetre_reader.ts";

/** 2026-01-01T00:00:00Z, in epoch seconds. */
const T0 = 1767225600;
const HZ = 50;
const PORTS = 48;

/** Power of a port at frame k: halves of watts, so every sum is exact. */
function watts(port: number, k: number): number {
  return (200 + port * 10 + (k % 7)) / 2;
}

/** Time of frame k as wattmetre-read prints it. */
function timeText(k: number): string {
  return ((T0 * HZ + k) / HZ).toFixed(6);
}

/** One line as wattmetre-read writes it; `values` overrides per port (null: empty field). */
function line(k: number, opts: { status?: string; values?: Record<number, number | null> } = {}): string {
  const fields = ["0x2a", String(1000 + k), timeText(k), opts.status ?? "OK"];
  for (let p = 0; p < PORTS; p++) {
    const v = opts.values && p in opts.values ? opts.values[p] : watts(p, k);
    fields.push(v === null || v === undefined ? "" : String(v));
  }
  return fields.join(",");
}

interface Harness {
  reader: WattmetreReader;
  batches: Sample[][];
  logs: string[];
  promoted: Set<string>;
}

function harness(
  opts: {
    mapping?: Record<string, string | string[]>;
    deliver?: (s: Sample[]) => Promise<void>;
    maxPendingSeconds?: number;
  } = {},
): Harness {
  const batches: Sample[][] = [];
  const logs: string[] = [];
  const promoted = new Set<string>();
  setLogLevel("info");
  setLogSink((l) => logs.push(l));
  const reader = new WattmetreReader({
    wattmetreId: "wattmetre1",
    mapping: new Map(Object.entries(opts.mapping ?? {}).map(([port, nodes]) => [port, [nodes].flat()])),
    isPromoted: (node) => promoted.has(node),
    deliver: opts.deliver ?? ((s) => {
      batches.push(s);
      return Promise.resolve();
    }),
    ...(opts.maxPendingSeconds !== undefined && { maxPendingSeconds: opts.maxPendingSeconds }),
  });
  return { reader, batches, logs, promoted };
}

function restoreLogs(): void {
  setLogLevel("warning");
  setLogSink((l) => console.error(l));
}

async function feed(reader: WattmetreReader, lines: string[]): Promise<void> {
  for (const l of lines) await reader.pushLine(l);
}

function frames(from: number, to: number): string[] {
  const out: string[] = [];
  for (let k = from; k < to; k++) out.push(line(k));
  return out;
}

function mean(values: number[]): number {
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

Deno.test("wattmetre reader delivers one exact mean per port and second, stamped with the whole second", async () => {
  const h = harness({ mapping: { "wattmetre1-port3": "taurus-7", "wattmetre1-port4": "taurus-7" } });
  try {
    await feed(h.reader, frames(0, 3 * HZ + 1)); // three whole seconds and the first frame of the fourth
    assert.equal(h.batches.length, 3, "a second is delivered when the next one starts");
    for (let s = 0; s < 3; s++) {
      const batch = h.batches[s]!;
      assert.equal(batch.length, PORTS);
      for (let p = 0; p < PORTS; p++) {
        const sample = batch.find((x) => x.deviceId === `wattmetre1-port${p}`);
        assert.ok(sample, `no sample for port ${p}`);
        assert.equal(sample.metricId, WATTMETRE_METRIC);
        assert.equal(sample.timestampMs, (T0 + s) * 1000);
        const expected = mean(Array.from({ length: HZ }, (_, i) => watts(p, s * HZ + i)));
        assert.equal(sample.value, expected);
        assert.deepEqual(sample.labels, p === 3 || p === 4 ? { _device_alias: "taurus-7" } : {});
      }
    }
    await h.reader.end();
    assert.equal(h.batches.length, 4, "end() delivers the last, partial second");
    assert.equal(h.batches[3]!.find((x) => x.deviceId === "wattmetre1-port0")!.value, watts(0, 3 * HZ));
    assert.equal(h.reader.counters.samplesAcknowledged, 4 * PORTS);
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader keeps every raw sample of the ports of a promoted node", async () => {
  const h = harness({
    mapping: { "wattmetre1-port3": "taurus-7", "wattmetre1-port4": "taurus-7", "wattmetre1-port5": "taurus-8" },
  });
  h.promoted.add("taurus-7");
  try {
    await feed(h.reader, frames(0, 2 * HZ));
    await h.reader.end();
    assert.equal(h.batches.length, 2);
    for (let s = 0; s < 2; s++) {
      const batch = h.batches[s]!;
      assert.equal(batch.length, 2 * HZ + (PORTS - 2));
      for (const p of [3, 4]) {
        const raw = batch.filter((x) => x.deviceId === `wattmetre1-port${p}`);
        assert.equal(raw.length, HZ);
        raw.forEach((x, i) => {
          const k = s * HZ + i;
          assert.equal(x.timestampMs, Number(timeText(k)) * 1000);
          assert.equal(x.value, watts(p, k));
          assert.deepEqual(x.labels, { _device_alias: "taurus-7" });
        });
      }
      const other = batch.filter((x) => x.deviceId === "wattmetre1-port5");
      assert.equal(other.length, 1, "ports of a node that is not promoted stay averaged");
      assert.deepEqual(other[0]!.labels, { _device_alias: "taurus-8" });
    }
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader applies a promotion change from the next second on", async () => {
  const h = harness({ mapping: { "wattmetre1-port0": "taurus-1" } });
  try {
    await feed(h.reader, frames(0, HZ / 2));
    h.promoted.add("taurus-1"); // promoted in the middle of second 0
    await feed(h.reader, frames(HZ / 2, 2 * HZ));
    h.promoted.delete("taurus-1"); // and no longer in the middle of second 1
    await feed(h.reader, frames(2 * HZ, 3 * HZ));
    await h.reader.end();
    const port0 = h.batches.map((b) => b.filter((x) => x.deviceId === "wattmetre1-port0").length);
    assert.deepEqual(port0, [1, HZ, 1]);
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader skips empty fields and leaves out a port without any value in a second", async () => {
  const h = harness();
  try {
    const lines = frames(0, HZ).map((_, k) => line(k, { values: { 1: k % 2 === 0 ? null : watts(1, k), 2: null } }));
    await feed(h.reader, [...lines, line(HZ)]);
    const batch = h.batches[0]!;
    const port1 = batch.find((x) => x.deviceId === "wattmetre1-port1")!;
    assert.equal(port1.value, mean(Array.from({ length: HZ / 2 }, (_, i) => watts(1, 2 * i + 1))));
    assert.equal(batch.find((x) => x.deviceId === "wattmetre1-port2"), undefined);
    assert.equal(batch.length, PORTS - 1);
    await h.reader.end();
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader drops malformed and not-OK lines, counting them and logging when it starts and ends", async () => {
  const h = harness();
  try {
    const bad = [
      "0x2a,1,1767225600.5",
      `0x2a,2,not-a-time,OK,${"1,".repeat(PORTS - 1)}1`,
      `0x2a,3,${timeText(5)},OK,12,abc,13`,
      "",
    ];
    await feed(h.reader, [...frames(0, 10), ...bad, ...bad, ...frames(10, 20)]);
    await feed(h.reader, [line(20, { status: "ERR" }), line(21, { status: "ERR" }), ...frames(22, HZ + 1)]);
    await h.reader.end();
    assert.equal(h.reader.counters.linesMalformed, 6, "empty lines are not counted");
    assert.equal(h.reader.counters.linesNotOk, 2);
    assert.equal(h.reader.counters.lines, HZ + 1 - 2 + 6 + 2);
    const warnings = h.logs.filter((l) => l.startsWith("WARNING"));
    assert.equal(warnings.length, 2, warnings.join("\n"));
    assert.match(
      warnings[0]!,
      /Wattmeter wattmetre1: dropping malformed lines reason="expected more than 4 comma-separated fields, found 3"/,
    );
    assert.match(warnings[1]!, /dropping lines not marked OK status="ERR"/);
    assert.ok(h.logs.some((l) => /INFO Wattmeter lines well-formed again occurrences=6/.test(l)), h.logs.join("\n"));
    assert.ok(h.logs.some((l) => /INFO Wattmeter lines OK again occurrences=2/.test(l)));
    const port0 = h.batches[0]!.find((x) => x.deviceId === "wattmetre1-port0")!;
    const good = Array.from({ length: HZ }, (_, k) => k).filter((k) => k !== 20 && k !== 21);
    assert.equal(port0.value, mean(good.map((k) => watts(0, k))), "the stream goes on around bad lines");
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader logs a skipped second once and counts the seconds missing", async () => {
  const h = harness();
  const oneLinePerSecond = (from: number, to: number) => frames(from, to).filter((_, i) => (from + i) % HZ === 0);
  try {
    await feed(h.reader, [...frames(0, HZ), ...frames(2 * HZ, 3 * HZ), ...oneLinePerSecond(3 * HZ, 10 * HZ)]);
    await feed(h.reader, oneLinePerSecond(12 * HZ, 13 * HZ)); // a second gap soon after: same condition
    assert.deepEqual(h.batches.slice(0, 3).map((b) => b[0]!.timestampMs), [T0, T0 + 2, T0 + 3].map((s) => s * 1000));
    assert.equal(h.reader.counters.secondsSkipped, 3);
    const warnings = h.logs.filter((l) => l.startsWith("WARNING"));
    assert.equal(warnings.length, 1, "the second gap continues the condition");
    assert.match(
      warnings[0]!,
      /seconds missing from the stream skipped_s=1 after="2026-01-01T00:00:00.000Z" before="2026-01-01T00:00:02.000Z"/,
    );
    assert.ok(!h.logs.some((l) => /continuous again/.test(l)));
    await feed(h.reader, oneLinePerSecond(13 * HZ, 74 * HZ)); // a minute without gaps
    await h.reader.end();
    assert.ok(h.logs.some((l) => /INFO Wattmeter stream continuous again occurrences=2/.test(l)), h.logs.join("\n"));
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader reports time going backwards and keeps delivering", async () => {
  const h = harness();
  try {
    await feed(h.reader, [...frames(HZ, 2 * HZ), ...frames(0, HZ), line(2 * HZ)]);
    await h.reader.end();
    assert.deepEqual(h.batches.map((b) => b[0]!.timestampMs), [T0 + 1, T0, T0 + 2].map((s) => s * 1000));
    assert.equal(h.reader.counters.timeSteps, 1);
    assert.equal(h.logs.filter((l) => /time went backwards/.test(l)).length, 1);
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader counts samples the spool refused and logs the loss once", async () => {
  let failing = true;
  const h = harness({ deliver: () => failing ? Promise.reject(new Error("disk full")) : Promise.resolve() });
  try {
    await feed(h.reader, frames(0, 3 * HZ + 1));
    failing = false;
    await feed(h.reader, frames(3 * HZ + 1, 4 * HZ + 1));
    await h.reader.end();
    assert.equal(h.reader.counters.samplesLost, 3 * PORTS);
    assert.equal(h.reader.counters.samplesAcknowledged, 2 * PORTS);
    const errors = h.logs.filter((l) => l.startsWith("ERROR"));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /samples lost, the spool could not store them samples=48 error="disk full"/);
    assert.ok(h.logs.some((l) => /INFO Wattmeter samples stored again occurrences=3/.test(l)));
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader asks the caller to wait while too many seconds await the spool", async () => {
  const waiting: (() => void)[] = [];
  const h = harness({ deliver: () => new Promise<void>((resolve) => waiting.push(resolve)), maxPendingSeconds: 5 });
  try {
    const answers: (Promise<void> | undefined)[] = [];
    for (let s = 0; s <= 5; s++) answers.push(h.reader.pushLine(line(s * HZ)));
    assert.deepEqual(answers.map((a) => a !== undefined), [false, false, false, false, false, true]);
    let released = false;
    const backpressure = answers[5]!.then(() => released = true);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(released, false);
    waiting.shift()!();
    await backpressure;
    assert.equal(released, true);
    const ending = h.reader.end();
    while (waiting.length > 0 || h.reader.counters.samplesAcknowledged < 6 * PORTS) {
      waiting.shift()?.();
      await new Promise((r) => setTimeout(r, 0));
    }
    await ending;
  } finally {
    restoreLogs();
  }
});

Deno.test("pumpWattmetreStream() splits chunks into lines and drops a last line cut short", async () => {
  const h = harness();
  try {
    const text = frames(0, 2 * HZ).join("\r\n") + "\r\n" + line(2 * HZ).slice(0, 40);
    const bytes = new TextEncoder().encode(text);
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += 997) chunks.push(bytes.subarray(i, i + 997)); // cuts lines anywhere
    await pumpWattmetreStream(ReadableStream.from(chunks), h.reader);
    assert.equal(h.reader.counters.lines, 2 * HZ);
    assert.equal(h.reader.counters.linesMalformed, 0);
    assert.deepEqual(h.batches.map((b) => b.length), [PORTS, PORTS], "end() delivered the last second");
    assert.equal(h.batches[1]![0]!.value, mean(Array.from({ length: HZ }, (_, i) => watts(0, HZ + i))));
    assert.equal(h.logs.filter((l) => /ended in the middle of a line/.test(l)).length, 1);
  } finally {
    restoreLogs();
  }
});

Deno.test("pumpWattmetreStream() stops reading when aborted and still delivers what it read", async () => {
  const h = harness();
  const abort = new AbortController();
  try {
    const encoder = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode(frames(0, HZ + 1).join("\n") + "\n"));
        // and then nothing more, like a wattmeter that went silent
      },
    });
    const pumping = pumpWattmetreStream(stream, h.reader, abort.signal);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(h.batches.length, 1);
    abort.abort();
    await pumping;
    assert.equal(h.batches.length, 2, "the second in progress is delivered at the stop");
  } finally {
    restoreLogs();
  }
});

Deno.test("wattmetre reader stores a port shared by two nodes without alias, raw while either node is promoted", async () => {
  const h = harness({
    mapping: { "wattmetre1-port3": ["chuc-3", "chuc-4"], "wattmetre1-port4": "chuc-5" },
  });
  try {
    await feed(h.reader, frames(0, HZ));
    h.promoted.add("chuc-4");
    await feed(h.reader, frames(HZ, 2 * HZ + 1));
    await h.reader.end();
    const first = h.batches[0]!;
    const shared = first.filter((x) => x.deviceId === "wattmetre1-port3");
    assert.equal(shared.length, 1, "averaged while neither node is promoted");
    assert.deepEqual(shared[0]!.labels, {}, "a shared port is credited to no node");
    assert.equal(shared[0]!.value, mean(Array.from({ length: HZ }, (_, i) => watts(3, i))));
    assert.deepEqual(first.find((x) => x.deviceId === "wattmetre1-port4")!.labels, { _device_alias: "chuc-5" });
    const second = h.batches[1]!.filter((x) => x.deviceId === "wattmetre1-port3");
    assert.equal(second.length, HZ, "raw once one of its nodes is promoted");
    assert.ok(second.every((x) => Object.keys(x.labels).length === 0));
  } finally {
    restoreLogs();
  }
});
