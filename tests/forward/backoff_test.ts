import assert from "node:assert/strict";
import { Backoff } from "../../src/forward/backoff.ts";
import { DEFAULTS } from "../../src/config/defaults.ts";
import { prng } from "../../scripts/torture/scenario.ts";

/** A `random` that returns the given values in turn. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

Deno.test("Backoff ceiling doubles from the base at each attempt up to the cap", () => {
  const b = new Backoff({ baseMs: 250, capMs: 3000, random: () => 1 });
  assert.deepEqual(Array.from({ length: 7 }, () => b.next()), [250, 500, 1000, 2000, 3000, 3000, 3000]);
});

Deno.test("Backoff draws each wait uniformly between 0 and the ceiling (full jitter)", () => {
  const b = new Backoff({ baseMs: 1000, capMs: 1000, random: sequence(0, 0.25, 0.5, 0.999) });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next()], [0, 250, 500, 999]);
});

Deno.test("Backoff.reset() starts again from the base and counts attempts from 0", () => {
  const b = new Backoff({ baseMs: 100, capMs: 10_000, random: () => 1 });
  for (let i = 0; i < 5; i++) b.next();
  assert.equal(b.attempts, 5);
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 100);
  assert.equal(b.attempts, 1);
});

Deno.test("Backoff stays at its cap however many attempts fail", () => {
  const b = new Backoff({ capMs: 3000, random: () => 1 });
  for (let i = 0; i < 10_000; i++) assert.ok(b.next() <= 3000);
  assert.equal(b.next(), 3000);
});

Deno.test("Backoff with the default forward_retry_max_ms retries an outage at least every 3 s", () => {
  const capMs = DEFAULTS.forward_retry_max_ms.default;
  assert.ok(capMs <= 3000, `forward_retry_max_ms defaults to ${capMs} ms`);
  const b = new Backoff({ capMs, random: () => 0.999999 });
  for (let i = 0; i < 50; i++) assert.ok(b.next() <= capMs);
});

Deno.test("Backoff spreads a fleet's attempts evenly over the cap once an outage lasts", () => {
  // 10,000 collectors, each far into an outage: their next waits fill [0, cap] evenly, so the
  // reconnections after the central database returns are spread, not synchronised.
  const random = prng(7);
  const bins = new Array(10).fill(0);
  for (let c = 0; c < 10_000; c++) {
    const b = new Backoff({ capMs: 3000, random });
    for (let i = 0; i < 8; i++) b.next();
    bins[Math.min(9, Math.floor(b.next() / 300))]++;
  }
  for (const n of bins) assert.ok(n > 800 && n < 1200, `uneven spread: ${bins.join(" ")}`);
});
