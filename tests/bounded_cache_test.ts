import assert from "node:assert/strict";
import { BoundedCache } from "../src/bounded_cache.ts";

Deno.test("a full BoundedCache keeps its entries instead of evicting each one before its next use", () => {
  const cache = new BoundedCache<number, string>(10);
  for (let round = 0; round < 3; round++) {
    cache.nextRound();
    for (let k = 0; k < 15; k++) if (cache.get(k) === undefined) cache.set(k, `v${k}`);
    assert.equal(cache.size, 10);
  }
  assert.deepEqual(Array.from({ length: 15 }, (_, k) => cache.get(k) !== undefined).filter(Boolean).length, 10);
});

Deno.test("a full BoundedCache sweeps out what was not used in the last two rounds", () => {
  const cache = new BoundedCache<number, number>(4);
  for (let k = 0; k < 4; k++) cache.set(k, k);
  cache.nextRound();
  cache.get(0);
  cache.nextRound();
  assert.ok(cache.set(10, 10));
  assert.equal(cache.get(0), 0);
  assert.equal(cache.get(1), undefined);
  assert.equal(cache.size, 2);
});

Deno.test("a BoundedCache tells its owner of each value a sweep or a clear lets go", () => {
  const dropped: number[] = [];
  const cache = new BoundedCache<number, number>(3, (v) => dropped.push(v));
  for (let k = 0; k < 3; k++) cache.set(k, k * 10);
  cache.nextRound();
  cache.get(2);
  cache.nextRound();
  cache.set(5, 50);
  assert.deepEqual(dropped, [0, 10]);
  cache.clear();
  assert.deepEqual(dropped, [0, 10, 20, 50]);
});

Deno.test("a BoundedCache gives each key its own value while sweeps free room and new keys take it", () => {
  const cache = new BoundedCache<string, string>(8);
  const cached: string[] = [];
  let next = 0;
  for (let round = 0; round < 40; round++) {
    cache.nextRound();
    // The last four keys cached stay in use; older ones fall out of use and are swept.
    for (const key of cached.slice(-4)) assert.equal(cache.get(key), `value of ${key}`);
    for (let i = 0; i < 6; i++) {
      const key = `k${next++}`;
      if (cache.set(key, `value of ${key}`)) cached.push(key);
    }
    assert.ok(cache.size <= 8);
  }
  // Far more keys were cached than the cache holds: their places were freed and taken again.
  assert.ok(cached.length > 40, `${cached.length} keys cached`);
  assert.equal(cache.get(cached[0]!), undefined);
});

Deno.test("a BoundedCache answers each key with its own value in whatever order the keys are asked", () => {
  const cache = new BoundedCache<string, string>(64);
  const keys = Array.from({ length: 48 }, (_, i) => `series ${i}`);
  for (const key of keys) cache.set(key, `value of ${key}`);
  // Asked in their order, reversed, and shuffled, with copies of the keys (equal strings, other objects).
  const shuffled = keys.map((_, i) => keys[(i * 17) % keys.length]!);
  for (const order of [keys, [...keys].reverse(), shuffled, keys.map((k) => `${k} `.trimEnd())]) {
    cache.nextRound();
    for (const key of order) assert.equal(cache.get(key), `value of ${key}`);
    assert.equal(cache.get("series 48"), undefined);
  }
});

Deno.test("a BoundedCache never answers a key with the value of the key that took its freed place", () => {
  const cache = new BoundedCache<number, string>(4);
  for (let k = 0; k < 4; k++) cache.set(k, `v${k}`);
  cache.nextRound();
  cache.get(0);
  cache.get(2);
  cache.nextRound();
  // 1 and 3 are swept; 7 and 8 take their places, right after the places of 0 and 2.
  assert.equal(cache.set(7, "v7"), true);
  assert.equal(cache.set(8, "v8"), true);
  for (
    const [asked, expected] of [[0, "v0"], [1, undefined], [2, "v2"], [3, undefined], [0, "v0"], [7, "v7"]] as const
  ) {
    assert.equal(cache.get(asked), expected, `key ${asked}`);
  }
  assert.equal(cache.get(8), "v8");
});
