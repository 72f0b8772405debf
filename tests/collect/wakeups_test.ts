import assert from "node:assert/strict";
import { Wakeups } from "../../src/collect/wakeups.ts";
import { FakeClock } from "../helpers/fake_clock.ts";

Deno.test("wakeups run every item at its time, in time order, and those of one time in the order added", async () => {
  const clock = new FakeClock();
  const ran: [string, number][] = [];
  const w = new Wakeups<string>(clock, (item) => ran.push([item, clock.monotonic()]));
  w.add(300, "c");
  w.add(100, "a1");
  w.add(200, "b");
  w.add(100, "a2");
  w.add(250, "b2");
  await clock.advance(99);
  assert.deepEqual(ran, []);
  await clock.advance(1_000);
  assert.deepEqual(ran, [["a1", 100], ["a2", 100], ["b", 200], ["b2", 250], ["c", 300]]);
});

Deno.test("wakeups keep one pending timer however many items wait, and clear() leaves none", async () => {
  const clock = new FakeClock();
  let ran = 0;
  const w = new Wakeups<number>(clock, () => ran++);
  for (let i = 0; i < 1000; i++) w.add(1000 + (i % 500) * 10, i);
  assert.equal(clock.pendingTimers(), 1);
  // The times 1000, 1010, ..., 1500 have two items each.
  await clock.advance(1_500);
  assert.equal(ran, 102);
  assert.equal(clock.pendingTimers(), 1);
  w.clear();
  assert.equal(clock.pendingTimers(), 0);
  await clock.advance(10_000);
  assert.equal(ran, 102);
});

Deno.test("wakeups run the items due at one instant in one timer firing", async () => {
  const clock = new FakeClock();
  let ran = 0;
  const w = new Wakeups<number>(clock, () => ran++);
  for (let i = 0; i < 1000; i++) w.add(500 + (i % 4) * 100, i);
  await clock.advance(1_000);
  assert.equal(ran, 1000);
  assert.equal(clock.firedTimers(), 4);
});

Deno.test("wakeups run an item added while others run at its own time, not before", async () => {
  const clock = new FakeClock();
  const ran: [string, number][] = [];
  const w = new Wakeups<string>(clock, (item) => {
    ran.push([item, clock.monotonic()]);
    if (item === "first") w.add(clock.monotonic() + 50, "added");
  });
  w.add(100, "first");
  w.add(120, "second");
  await clock.advance(1_000);
  assert.deepEqual(ran, [["first", 100], ["second", 120], ["added", 150]]);
});

Deno.test("wakeups run the items a timer firing a millisecond early reaches, and never earlier ones", async () => {
  const clock = new FakeClock(Date.UTC(2026, 0, 1), { earlyMs: 1 });
  const ran: [string, number][] = [];
  const w = new Wakeups<string>(clock, (item) => ran.push([item, clock.monotonic()]));
  w.add(100, "a");
  w.add(105, "b");
  await clock.advance(1_000);
  assert.deepEqual(ran, [["a", 99], ["b", 104]]);
});

Deno.test("wakeups still run the other items when one throws, and the error reaches the caller", async () => {
  const clock = new FakeClock();
  const ran: string[] = [];
  const w = new Wakeups<string>(clock, (item) => {
    if (item === "bad") throw new Error("bug");
    ran.push(item);
  });
  w.add(100, "bad");
  w.add(200, "good");
  await assert.rejects(() => clock.advance(150), /bug/);
  await clock.advance(1_000);
  assert.deepEqual(ran, ["good"]);
});

Deno.test("wakeups call afterFire at the end of each wake-up, their timer for the next item already set", async () => {
  const clock = new FakeClock();
  const seen: [number, number][] = [];
  // A timer set in afterFire for later than the next item's: the owner's (pipeline.ts Housekeeping).
  let owners: ReturnType<typeof clock.setTimeout> | undefined;
  const w = new Wakeups<number>(clock, (at) => {
    if (at < 5000) w.add(at + 1000, at + 1000);
  }, () => {
    seen.push([clock.monotonic(), clock.pendingTimers()]);
    if (owners !== undefined) clock.clearTimeout(owners);
    owners = clock.setTimeout(() => assert.fail("the owner's timer fired"), 1150);
  });
  w.add(1000, 1000);
  await clock.advance(5500);
  // At each wake-up its own timer (for the next item) was pending already, beside the owner's.
  assert.deepEqual(seen, [[1000, 1], [2000, 2], [3000, 2], [4000, 2], [5000, 1]]);
  clock.clearTimeout(owners!);
  w.clear();
});
