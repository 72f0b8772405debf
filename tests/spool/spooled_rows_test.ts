/**
 * Rows read back for forwarding, as columns (src/spool/spooled_rows.ts): each row stays whole
 * through slices, and no column can be shorter than the others.
 */
import assert from "node:assert/strict";
import { SpooledRows, type SpooledSeries } from "../../src/spool/spooled_rows.ts";
import { copyPrefix } from "../../src/forward/copy_text.ts";

const A: SpooledSeries = { id: 1, copyPrefix: copyPrefix("pdu-1", "power_watt", "{}"), problem: undefined };
const B: SpooledSeries = { id: 2, copyPrefix: copyPrefix("pdu-2", "power_watt", '{"outlet":"3"}'), problem: undefined };

/** Rows of seqs 11.., timestamps 1000.. and values 0.5.., the series alternating A and B. */
function rows(n: number): SpooledRows {
  const numbers = new Float64Array(3 * n);
  for (let i = 0; i < n; i++) numbers.set([11 + i, 1_000 + i, i + 0.5], 3 * i);
  return new SpooledRows(numbers, Array.from({ length: n }, (_, i) => i % 2 === 0 ? A : B));
}

const whole = (r: SpooledRows) =>
  Array.from({ length: r.length }, (_, i) => [r.seq(i), r.timestampMs(i), r.value(i), r.series(i).id]);

Deno.test("a slice of rows keeps each row whole: its seq, timestamp, value and series", () => {
  const all = rows(6);
  const middle = all.slice(2, 5);
  assert.deepEqual(whole(middle), whole(all).slice(2, 5));
  assert.deepEqual([middle.firstSeq, middle.lastSeq], [13, 15]);
  assert.deepEqual(whole(all.slice(4)), whole(all).slice(4));
  assert.deepEqual(whole(middle.slice(1)), whole(all).slice(3, 5), "a slice of a slice");
});

Deno.test("a row as a sample gives the device, metric and labels of its series", () => {
  assert.deepEqual(rows(2).samples(), [
    {
      seq: 11,
      timestampMs: 1_000,
      value: 0.5,
      deviceId: "pdu-1",
      metricId: "power_watt",
      labels: {},
      spooledSeries: A,
    },
    {
      seq: 12,
      timestampMs: 1_001,
      value: 1.5,
      deviceId: "pdu-2",
      metricId: "power_watt",
      labels: { outlet: "3" },
      spooledSeries: B,
    },
  ]);
});

Deno.test("rows refuse numbers that are not three per series, naming both counts", () => {
  assert.throws(
    () => new SpooledRows(new Float64Array(5), [A, B]),
    /Rows need three numbers each: 5 numbers for 2 series/,
  );
});
