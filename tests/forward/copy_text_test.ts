import assert from "node:assert/strict";
import {
  COPY_CHUNK_BYTES,
  CopyEncoder,
  copyPrefix,
  copyPrefixParts,
  copyRow,
  copyTimestamp,
  recycleCopyChunks,
} from "../../src/forward/copy_text.ts";

const sample = {
  timestampMs: 1_790_000_000_123.456,
  deviceId: "node\t1",
  metricId: "m\\x",
  value: -Infinity,
  labels: { note: 'a\nb\r"c"' },
};

/** The rows `encoder` wrote, as text. */
function decoded(encoder: CopyEncoder): string {
  return encoder.finish().map((chunk) => new TextDecoder().decode(chunk)).join("");
}

Deno.test("a COPY row encoded from its series' prefix is the row encoded from the sample alone", () => {
  const encoder = new CopyEncoder();
  encoder.row(
    copyPrefix(sample.deviceId, sample.metricId, JSON.stringify(sample.labels)),
    sample.timestampMs,
    -Infinity,
  );
  assert.equal(decoded(encoder), copyRow(sample));
  assert.equal(
    copyRow(sample),
    'node\\t1\tm\\\\x\t{"note":"a\\\\nb\\\\r\\\\"c\\\\""}\t2026-09-21T14:13:20.123456+00\t-Infinity\n',
  );
});

Deno.test("copyPrefixParts gives back the device, metric and labels a prefix was made of, escapes included", () => {
  for (
    const [deviceId, metricId, labelsJson] of [
      ["node-1", "power_watt", "{}"],
      ["node\t1\\", "m\\x\n\r", '{"a":"\\t\\\\ b"}'],
      ["\\t", "\\\\", '{"é":"✓"}'],
    ]
  ) {
    assert.deepEqual(copyPrefixParts(copyPrefix(deviceId!, metricId!, labelsJson!)), {
      deviceId,
      metricId,
      labelsJson,
    });
  }
});

Deno.test("copyTimestamp encodes each timestamp alike, repeated or not", () => {
  const a = copyTimestamp(1_790_000_000_000.001);
  const b = copyTimestamp(1_790_000_000_000.002);
  assert.equal(a, "2026-09-21T14:13:20.000001+00");
  assert.equal(b, "2026-09-21T14:13:20.000002+00");
  assert.equal(copyTimestamp(1_790_000_000_000.001), a);
});

Deno.test("CopyEncoder writes every row whole, in chunks, non-ASCII text and long series included", () => {
  const samples = Array.from({ length: 20_000 }, (_, i) => ({
    timestampMs: 1_790_000_000_000 + Math.floor(i / 7) * 1000,
    deviceId: i % 2 ? "nœud-é" : "node-1",
    metricId: "power",
    value: [NaN, Infinity, 1.5e-7, -42, 123456.789][i % 5]!,
    labels: i === 100 ? { big: "x".repeat(COPY_CHUNK_BYTES * 2) } : { i: String(i), unit: "°C" },
  }));
  const encoder = new CopyEncoder();
  for (const s of samples) {
    encoder.row(copyPrefix(s.deviceId, s.metricId, JSON.stringify(s.labels)), s.timestampMs, s.value);
  }
  const chunks = encoder.finish();
  assert.ok(chunks.length > 3);
  for (const chunk of chunks) assert.equal(chunk.at(-1), 10, "a chunk ends with a whole row");
  assert.equal(chunks.map((chunk) => new TextDecoder().decode(chunk)).join(""), samples.map(copyRow).join(""));
});

Deno.test("CopyEncoder writes each timestamp as copyTimestamp does: repeated, across minutes, before 1970 and past 2255", () => {
  const minute = 1_790_000_040_000;
  const timestamps = [
    minute - 0.001,
    minute,
    minute + 0.001,
    minute + 59_999.999,
    minute + 60_000,
    -1.5,
    -60_000.0005,
    0,
    9_000_000_000_000, // year 2255: beyond microseconds as a safe integer
    -9_000_000_000_000,
    ...Array.from({ length: 5_000 }, (_, i) => minute + i * 12_345.6789 - 30_000_000 + (i % 7) / 1000),
  ];
  const encoder = new CopyEncoder();
  // Each in a run of its own length modulo 4 (none, once, twice...): the rows of a poll share theirs.
  const samples = timestamps.flatMap((timestampMs, i) =>
    Array.from({ length: 1 + (i % 4) }, () => ({ ...sample, timestampMs, value: 1 }))
  );
  for (const s of samples) encoder.row(copyPrefix(s.deviceId, s.metricId, JSON.stringify(s.labels)), s.timestampMs, 1);
  assert.deepEqual(decoded(encoder).split("\n"), [...samples.map(copyRow).map((row) => row.slice(0, -1)), ""]);
  assert.throws(() => new CopyEncoder().row("d\tm\t{}\t", 99_999_999_999_999_999, 1), RangeError);
});

Deno.test("the chunks of a sent batch are reused by the next one, which encodes its own rows", () => {
  const encode = (value: number) => {
    const encoder = new CopyEncoder();
    for (let i = 0; i < 2_000; i++) encoder.row(copyPrefix("d", "m", "{}"), 1_790_000_000_000 + i, value);
    return encoder.finish();
  };
  const first = encode(1);
  const buffers = new Set(first.map((chunk) => chunk.buffer));
  recycleCopyChunks(first);
  const second = encode(2);
  assert.ok(second.some((chunk) => buffers.has(chunk.buffer)));
  const text = second.map((chunk) => new TextDecoder().decode(chunk)).join("");
  assert.equal(text.split("\n").length - 1, 2_000);
  assert.ok(text.split("\n").slice(0, -1).every((row) => row.endsWith("\t2")));
});
