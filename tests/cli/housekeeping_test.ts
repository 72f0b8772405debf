/**
 * The pipeline's housekeeping tick (src/cli/pipeline.ts `Housekeeping`): about once a second, in
 * the turn of a commit when one comes close enough to the second, on a timer of its own only
 * when none does. On a fake clock: the timers fired are the process's wake-ups.
 */
import assert from "node:assert/strict";
import { Housekeeping } from "../../src/cli/pipeline.ts";
import { FakeClock, settle } from "../helpers/fake_clock.ts";

Deno.test("housekeeping rides on commits about a second apart and wakes the process for nothing else", async () => {
  const clock = new FakeClock();
  const ticks: number[] = [];
  const h = new Housekeeping(clock, () => ticks.push(clock.monotonic()));
  // Commits every second, up to 70 ms early or late (load): each carries the tick.
  const jitter = [0, 40, -30, 70, -60, 10, 60, -60, 0, 20];
  let at = 0;
  for (let i = 0; i < 20; i++) {
    const next = 1000 * (i + 1) + jitter[i % jitter.length]!;
    await clock.advance(next - at);
    at = next;
    h.offer();
    await settle();
  }
  assert.equal(clock.firedTimers(), 0, "housekeeping timers fired while commits came every second");
  assert.equal(ticks.length, 20);
  h.stop();
  assert.equal(clock.pendingTimers(), 0);
});

Deno.test("housekeeping runs on its own timer without commits, and about once a second with frequent ones", async () => {
  const clock = new FakeClock();
  const ticks: number[] = [];
  const h = new Housekeeping(clock, () => ticks.push(clock.monotonic()));
  await clock.advance(11_500);
  assert.equal(ticks.length, 10, "ticks in 11.5 s without a commit");
  for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i]! - ticks[i - 1]! <= 1150);

  // Commits every 100 ms: the tick still runs about once a second, never twice within 850 ms.
  ticks.length = 0;
  for (let i = 0; i < 100; i++) {
    await clock.advance(100);
    h.offer();
    h.offer();
    await settle();
  }
  assert.ok(ticks.length >= 9 && ticks.length <= 11, `ticks in 10 s of commits every 100 ms: ${ticks.length}`);
  for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i]! - ticks[i - 1]! >= 850);
  h.stop();
  const after = ticks.length;
  h.offer();
  await settle();
  await clock.advance(5000);
  assert.equal(ticks.length, after, "ticks after stop()");
  assert.equal(clock.pendingTimers(), 0);
});
