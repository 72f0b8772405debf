import assert from "node:assert/strict";
import { copyPrefix, copyRow, copyTimestamp } from "../../src/forward/copy_text.ts";

Deno.test("a COPY row from its series' prefix is the row encoded from the sample alone", () => {
  const sample = {
    timestampMs: 1_790_000_000_123.456,
    deviceId: "node\t1",
    metricId: "m\\x",
    value: -Infinity,
    labels: { note: 'a\nb\r"c"' },
  };
  const prefix = copyPrefix(sample.deviceId, sample.metricId, JSON.stringify(sample.labels));
  assert.equal(copyRow({ ...sample, copyPrefix: prefix }), copyRow(sample));
  assert.equal(
    copyRow(sample),
    'node\\t1\tm\\\\x\t{"note":"a\\\\nb\\\\r\\\\"c\\\\""}\t2026-09-21T14:13:20.123456+00\t-Infinity\n',
  );
});

Deno.test("copyTimestamp encodes each timestamp alike, repeated or not", () => {
  const a = copyTimestamp(1_790_000_000_000.001);
  const b = copyTimestamp(1_790_000_000_000.002);
  assert.equal(a, "2026-09-21T14:13:20.000001+00");
  assert.equal(b, "2026-09-21T14:13:20.000002+00");
  assert.equal(copyTimestamp(1_790_000_000_000.001), a);
});
