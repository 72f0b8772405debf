/**
 * The pipeline's housekeeping tick (src/cli/pipeline.ts `Housekeeping`): about once a second, in
 * a wake-up of the scheduler's when one comes close enough to the second, on a timer of its own
 * only when none does. On a fake clock: the timers fired are the process's wake-ups.
 */
import assert from "node:assert/strict";
import { Housekeeping } from "../../src/cli/pipeline.ts";
import { Wakeups } from "../../src/collect/wakeups.ts";
import { FakeClock, settle } from "../helpers/fake_clock.ts";

Deno.test("housekeeping rides on wake-ups about a second apart and wakes the process for nothing else", async () => {
  const clock = new FakeClock();
  const ticks: number[] = [];
  const h = new Housekeeping(clock, () => ticks.push(clock.monotonic()));
  // Wake-ups every second, up to 70 ms early or late (load): each carries the tick.
  const jitter = [0, 40, -30, 70, -60, 10, 60, -60, 0, 20];
  let at = 0;
  for (let i = 0; i < 20; i++) {
    const next = 1000 * (i + 1) + jitter[i % jitter.length]!;
    await clock.advance(next - at);
    at = next;
    h.offer();
    await settle();
  }
  assert.equal(clock.firedTimers(), 0, "housekeeping timers fired while wake-ups came every second");
  assert.equal(ticks.length, 20);
  h.stop();
  assert.equal(clock.pendingTimers(), 0);
});

Deno.test("housekeeping runs every 1.15 s on its own timer without offers, and about once a second with frequent ones", async () => {
  const clock = new FakeClock();
  const ticks: number[] = [];
  const h = new Housekeeping(clock, () => ticks.push(clock.monotonic()));
  await clock.advance(11_500);
  assert.deepEqual(
    ticks,
    [1150, 2300, 3450, 4600, 5750, 6900, 8050, 9200, 10_350, 11_500],
    "ticks without an offer",
  );

  // Wake-ups every 100 ms: the tick still runs about once a second, never twice within 850 ms.
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

Deno.test("housekeeping offered at the end of the scheduler's wake-ups never fires its own timer", async () => {
  const clock = new FakeClock();
  let ticks = 0;
  const h = new Housekeeping(clock, () => ticks++);
  // Polls every second, as the scheduler's Wakeups run them, with the pipeline's offer after each.
  const w = new Wakeups<number>(clock, (at) => w.add(at + 1000, at + 1000), () => h.offer());
  w.add(1000, 1000);
  await clock.advance(30_500);
  assert.equal(ticks, 30);
  assert.equal(clock.firedTimers(), 30, "timers fired: the polls' alone");
  h.stop();
  w.clear();
  assert.equal(clock.pendingTimers(), 0);
});

Deno.test("housekeeping after polls stop: the first tick at most two seconds after the last, then every 1.15 s", async () => {
  const clock = new FakeClock();
  const ticks: number[] = [];
  const h = new Housekeeping(clock, () => ticks.push(clock.monotonic()));
  for (let i = 1; i <= 3; i++) {
    await clock.advance(1000);
    h.offer();
  }
  await clock.advance(5000);
  assert.deepEqual(ticks, [1000, 2000, 3000, 5000, 6150, 7300]);
  h.stop();
});
