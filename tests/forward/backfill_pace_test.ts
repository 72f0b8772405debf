import assert from "node:assert/strict";
import {
  BACKFILL_MIN_ROWS,
  BACKFILL_PAUSE_MAX_MS,
  BACKFILL_SLOW_MS,
  BACKFILL_START_ROWS,
  BackfillPace,
} from "../../src/forward/backfill_pace.ts";
import { FakeClock } from "../helpers/fake_clock.ts";

function pace(opts: { capRowsPerS?: number; maxRows?: number } = {}) {
  const clock = new FakeClock();
  return {
    clock,
    pace: new BackfillPace({ maxRows: opts.maxRows ?? 20_000, capRowsPerS: opts.capRowsPerS ?? 0, pipeline: 2, clock }),
  };
}

/** Fast answers until the pace is at full batches. */
function atFullPace(p: BackfillPace): BackfillPace {
  while (p.rows < 20_000) p.observe(100);
  return p;
}

Deno.test("backfill pace starts a backlog with small batches, one in flight, and doubles them on fast answers", () => {
  const { pace: p } = pace();
  assert.equal(p.allowance(), BACKFILL_START_ROWS);
  assert.equal(p.inFlightMax, 1);
  const sizes = [];
  for (let i = 0; i < 3; i++) {
    assert.equal(p.observe(100), undefined, "starting slow is not the central database being slow");
    sizes.push(p.allowance());
  }
  assert.deepEqual(sizes, [2 * BACKFILL_START_ROWS, 4 * BACKFILL_START_ROWS, 20_000]);
  assert.equal(p.inFlightMax, 2, "the pipeline opens at full batches");
});

Deno.test("backfill pace holds a starting backlog's batch while answers are neither fast nor slow", () => {
  const { pace: p } = pace();
  for (let i = 0; i < 5; i++) p.observe(1000);
  assert.equal(p.allowance(), BACKFILL_START_ROWS);
  assert.equal(p.inFlightMax, 1);
  assert.equal(p.slow, false);
});

Deno.test("backfill pace halves the batch of a slow central database and pauses for as long as the batch took", async () => {
  const { clock, pace: full } = pace();
  const p = atFullPace(full);
  assert.equal(p.allowance(), 20_000);
  assert.equal(p.inFlightMax, 2);
  assert.equal(p.observe(BACKFILL_SLOW_MS + 1000), "slow");
  assert.equal(p.rows, 10_000);
  assert.equal(p.inFlightMax, 1, "one batch at a time while slow");
  assert.equal(p.allowance(), 0, "paused right after the slow batch");
  await clock.advance(BACKFILL_SLOW_MS + 999);
  assert.equal(p.allowance(), 0);
  await clock.advance(1);
  assert.equal(p.allowance(), 10_000);
});

Deno.test("backfill pace never goes under the minimum batch and doubles its pause there, up to the cap", async () => {
  const { clock, pace: p } = pace();
  atFullPace(p);
  for (let i = 0; i < 20; i++) p.observe(BACKFILL_SLOW_MS + 1);
  assert.equal(p.rows, BACKFILL_MIN_ROWS);
  // Each slow answer at the minimum doubles the pause; it never exceeds the cap.
  const pauses: number[] = [];
  for (let i = 0; i < 4; i++) {
    p.observe(BACKFILL_SLOW_MS + 1);
    pauses.push(p.pausedUntil - clock.monotonic());
  }
  assert.deepEqual(pauses, [
    BACKFILL_PAUSE_MAX_MS,
    BACKFILL_PAUSE_MAX_MS,
    BACKFILL_PAUSE_MAX_MS,
    BACKFILL_PAUSE_MAX_MS,
  ]);
  const { clock: c2, pace: q } = pace();
  atFullPace(q);
  q.observe(BACKFILL_SLOW_MS + 1); // 10,000
  q.observe(BACKFILL_SLOW_MS + 1); // 5,000
  q.observe(BACKFILL_SLOW_MS + 1); // 2,500
  q.observe(BACKFILL_SLOW_MS + 1); // 1,250
  q.observe(BACKFILL_SLOW_MS + 1); // 625
  q.observe(BACKFILL_SLOW_MS + 1); // 500
  assert.equal(q.rows, BACKFILL_MIN_ROWS);
  q.observe(BACKFILL_SLOW_MS + 1);
  assert.equal(q.pausedUntil - c2.monotonic(), 2 * (BACKFILL_SLOW_MS + 1));
  q.observe(BACKFILL_SLOW_MS + 1);
  assert.equal(q.pausedUntil - c2.monotonic(), 4 * (BACKFILL_SLOW_MS + 1));
  await c2.advance(BACKFILL_PAUSE_MAX_MS);
  assert.equal(q.allowance(), BACKFILL_MIN_ROWS);
});

Deno.test("backfill pace is back to full batches, no pause and a full pipeline once the central database is fast", () => {
  const { pace: p } = pace();
  atFullPace(p);
  for (let i = 0; i < 8; i++) p.observe(BACKFILL_SLOW_MS + 1);
  assert.equal(p.observe(100), undefined, "one fast answer ends the pause, the batch grows back");
  assert.equal(p.allowance(), 1000);
  const turned = [];
  for (let i = 0; i < 5; i++) turned.push(p.observe(100));
  assert.deepEqual(turned, [undefined, undefined, undefined, undefined, "fast"]);
  assert.equal(p.rows, 20_000);
  assert.equal(p.inFlightMax, 2);
  assert.equal(p.allowance(), 20_000);
});

Deno.test("backfill pace under a rate cap waits for a minimum batch instead of sending crumbs", async () => {
  const { clock, pace: p } = pace({ capRowsPerS: 1000 });
  const sizes: number[] = [];
  // A step every 50 ms for 10 s, as the forwarder's loop polls the pace.
  for (let t = 0; t < 10_000; t += 50) {
    const rows = p.allowance();
    if (rows > 0) {
      sizes.push(rows);
      p.spent(rows);
    }
    await clock.advance(50);
  }
  assert.ok(sizes.length > 0);
  assert.ok(sizes.every((n) => n >= BACKFILL_MIN_ROWS), `batch sizes ${sizes.join(",")}`);
  const total = sizes.reduce((a, b) => a + b, 0);
  assert.ok(total <= 10_000 + BACKFILL_MIN_ROWS, `${total} rows in 10 s under a cap of 1,000 rows/s`);
  assert.ok(total >= 9_000, `${total} rows in 10 s under a cap of 1,000 rows/s`);
});

Deno.test("backfill pace under a cap below the minimum batch still sends minimum batches, at the capped rate", async () => {
  const { clock, pace: p } = pace({ capRowsPerS: 100 });
  const sizes: number[] = [];
  for (let t = 0; t <= 20_000; t += 100) {
    const rows = p.allowance();
    if (rows > 0) {
      sizes.push(rows);
      p.spent(rows);
    }
    await clock.advance(100);
  }
  assert.deepEqual(sizes, [500, 500, 500, 500]);
});
