import assert from "node:assert/strict";
import { deadline, DeadlineError } from "../src/clock.ts";
import { FakeClock } from "./helpers/fake_clock.ts";

Deno.test("deadline() passes the answer through when it comes in time, and leaves no timer behind", async () => {
  const clock = new FakeClock();
  const answer = deadline(Promise.resolve(42), { ms: 1000, message: "late", clock });
  assert.equal(await answer, 42);
  assert.equal(clock.pendingTimers(), 0);
});

Deno.test("deadline() rejects with a timeout that names what was late once the time has passed", async () => {
  const clock = new FakeClock();
  const never = new Promise<number>(() => {});
  const bounded = deadline(never, { ms: 1000, message: "Central database did not answer within 1000 ms", clock });
  const outcome = bounded.then(() => "answered", (err) => err);
  await clock.advance(999);
  await clock.advance(1);
  const err = await outcome;
  assert.ok(err instanceof DeadlineError);
  assert.equal(err.code, "ETIMEDOUT");
  assert.equal(err.message, "Central database did not answer within 1000 ms");
});

Deno.test("deadline() rejects with the signal's reason as soon as it aborts, and clears its timer", async () => {
  const clock = new FakeClock();
  const controller = new AbortController();
  const bounded = deadline(new Promise(() => {}), { ms: 1000, message: "late", clock, signal: controller.signal });
  controller.abort(new Error("stopping"));
  await assert.rejects(bounded, /stopping/);
  assert.equal(clock.pendingTimers(), 0);
});
