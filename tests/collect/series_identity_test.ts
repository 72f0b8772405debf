/**
 * Series identity computed once (src/collect/series_identity.ts): a known series is reused, the
 * cache stays within its bound whatever the device sends, and the samples built from identities
 * are those built without them (one per series and poll, the same refusals), whether the door
 * takes them as objects or, for known series at the poll's time, as columns.
 */
import assert from "node:assert/strict";
import { type PollPart, PollSamples, samplesOfPoll } from "../../src/collect/scheduler.ts";
import { makeIdentity, SeriesIdentities } from "../../src/collect/series_identity.ts";
import type { Reading } from "../../src/sources/source.ts";
import { type Sample, samplesOf } from "../../src/sample.ts";
import { entryFor } from "../../scripts/harness/entries.ts";

const T = 1_790_000_000_000;
const entry = entryFor("prometheus://h:9100/", { name: "all", deviceId: "n1", labels: { site: "nancy" } });

function reading(series: string, labels: Record<string, string>, value = 1): Reading {
  return { entry, value, metricId: "prom_load", labels, seriesKey: series };
}

Deno.test("a known series gets the identity of its first sample: the same labels object, key and JSON", () => {
  const identities = new SeriesIdentities(10);
  const first = samplesOfPoll([reading('load{a="1"}', { a: "1" })], T, T, identities).samples[0]!;
  const second = samplesOfPoll([reading('load{a="1"}', { a: "1" }, 2)], T + 1000, T + 1000, identities).samples[0]!;
  assert.ok(first.series);
  assert.equal(second.series, first.series);
  assert.equal(second.labels, first.labels);
  assert.deepEqual(second.labels, { a: "1", site: "nancy" });
  assert.equal(first.series.key, `n1\u0000prom_load\u0000${JSON.stringify({ a: "1", site: "nancy" })}`);
  assert.equal(second.value, 2);
  assert.ok(Object.isFrozen(first.labels));
});

Deno.test("samples built from identities are those built without: one per series and poll, labels in any order", () => {
  const readings = [
    reading('load{a="1",b="2"}', { a: "1", b: "2" }),
    reading('load{b="2",a="1"}', { b: "2", a: "1" }),
    reading('load{a="1",b="3"}', { a: "1", b: "3" }),
    { ...reading('load{a="1",b="3"}', { a: "1", b: "3" }), timestampMs: T - 1000 },
  ];
  const plain = samplesOfPoll(readings.map(({ seriesKey: _, ...r }) => r), T, T);
  const identities = new SeriesIdentities(10);
  for (let poll = 0; poll < 2; poll++) {
    const cached = samplesOfPoll(readings, T, T, identities);
    assert.deepEqual(cached.samples.map(({ series: _, ...s }) => s), plain.samples);
    assert.equal(cached.samples.length, 3);
  }
});

Deno.test("a series two entries of one device select is sampled once per poll, cached by one entry and not by the other", () => {
  // Room for two identities an entry: entry b's third series, the one entry a also selects, gets none.
  const other = entryFor("prometheus://h:9100/", { name: "all", deviceId: "n1", labels: { site: "nancy" } });
  const readingOf = (e: typeof entry, a: string): Reading => ({
    entry: e,
    value: 1,
    metricId: "prom_load",
    labels: { a },
    seriesKey: `load{a="${a}"}`,
  });
  const identities = new SeriesIdentities(2);
  const { samples } = samplesOfPoll(
    [readingOf(entry, "9"), readingOf(other, "0"), readingOf(other, "1"), readingOf(other, "9")],
    T,
    T,
    identities,
  );
  assert.equal(samples.filter((s) => s.labels.a === "9").length, 1);
  assert.equal(samples.length, 3);
  assert.ok(samples[0]!.series, "entry a's sample has its identity");
});

Deno.test("an identity carries its series' refusal: every sample of a series the database could not store is refused", () => {
  const identities = new SeriesIdentities(10);
  const huge = { big: "x".repeat(20_000) };
  for (let poll = 0; poll < 2; poll++) {
    const { samples, refused } = samplesOfPoll([reading("big", huge), reading("ok", {})], T, T, identities);
    assert.equal(samples.length, 1);
    assert.equal(refused.length, 1);
    assert.match(refused[0]!.message, /Sample of prom_load refused: Labels are \d+ characters of JSON/);
  }
});

Deno.test("the identity cache never holds more than its bound, and sweeps series gone from the device", () => {
  const identities = new SeriesIdentities(100);
  const poll = (from: number, n: number) =>
    samplesOfPoll(
      Array.from({ length: n }, (_, i) => reading(`s{i="${from + i}"}`, { i: String(from + i) })),
      T,
      T,
      identities,
    ).samples;
  // More live series than the bound: the first 100 keep their identity, the others are built without.
  for (let p = 0; p < 3; p++) {
    const samples = poll(0, 150);
    assert.equal(samples.length, 150);
    assert.equal(samples.filter((s) => s.series).length, 100);
    assert.deepEqual(samples[120]!.labels, { i: "120", site: "nancy" });
    assert.equal(identities.size, 100);
  }
  // The device now sends other series: once the old ones missed two polls, the new ones are kept.
  assert.equal(poll(1000, 100).filter((s) => s.series).length, 0);
  poll(1000, 100);
  const fresh = poll(1000, 100);
  assert.equal(fresh.filter((s) => s.series).length, 100);
  assert.equal(poll(1000, 100)[0]!.series, fresh[0]!.series);
  assert.equal(identities.size, 100);
});

Deno.test("an entry whose readings stop naming their series gives its identities up after two polls", () => {
  const identities = new SeriesIdentities(100);
  const poll = (named: boolean) => {
    const readings = Array.from({ length: 50 }, (_, i) => {
      const r = reading(`s{i="${i}"}`, { i: String(i) });
      return named ? r : { ...r, seriesKey: undefined };
    });
    return samplesOfPoll(readings, T, T, identities).samples;
  };
  const first = poll(true);
  assert.equal(identities.size, 50);
  const held = first[7]!.series!;
  assert.equal(identities.byPollKey(held.pollKey), held);
  // Its source no longer names them (an exporter too large for the source's cache): the same samples, no identity.
  const unnamed = poll(false);
  assert.equal(unnamed.filter((s) => s.series).length, 0);
  assert.deepEqual(unnamed.map((s) => s.labels), first.map((s) => s.labels));
  assert.equal(identities.size, 50, "one poll without them: still held");
  poll(false);
  assert.equal(identities.size, 0);
  assert.equal(identities.byPollKey(held.pollKey), undefined);
  // Named again: identities are made anew.
  assert.equal(poll(true).filter((s) => s.series).length, 50);
});

Deno.test("makeIdentity gives labels with sorted names a single key for the spool and for the poll", () => {
  const sorted = makeIdentity("d", "m", { a: "1", b: "2" });
  assert.equal(sorted.pollKey, sorted.key);
  const unsorted = makeIdentity("d", "m", { b: "2", a: "1" });
  assert.notEqual(unsorted.key, sorted.key);
  assert.equal(unsorted.pollKey, sorted.pollKey);
});

Deno.test("an entry's only series gives its place up to a new one after two polls without it", () => {
  const identities = new SeriesIdentities(10);
  const bare = entryFor("prometheus://h:9100/", { name: "one", deviceId: "n2" });
  const only = (key: string) =>
    samplesOfPoll([{ entry: bare, value: 1, metricId: key, labels: {}, seriesKey: key }], T, T, identities).samples[0]!;
  const old = only("a");
  assert.equal(only("a").series, old.series);
  identities.nextPoll();
  const renamed = only("b");
  assert.ok(renamed.series);
  assert.equal(renamed.metricId, "b");
  assert.equal(identities.size, 1);
  assert.notEqual(only("a").series, old.series);
});

Deno.test("an entry with two live series keeps an identity for each, up to its bound", () => {
  const both = (identities: SeriesIdentities) =>
    samplesOfPoll([reading("x", { k: "x" }), reading("y", { k: "y" })], T, T, identities).samples;
  const two = new SeriesIdentities(2);
  const first = both(two);
  const second = both(two);
  assert.deepEqual(second.map((s) => s.series), first.map((s) => s.series));
  assert.ok(first.every((s) => s.series));
  assert.equal(two.size, 2);
  const one = new SeriesIdentities(1);
  for (let poll = 0; poll < 2; poll++) {
    const samples = both(one);
    assert.deepEqual(samples.map((s) => s.series !== undefined), [true, false]);
    assert.deepEqual(samples[1]!.labels, { k: "y", site: "nancy" });
  }
  assert.equal(one.size, 1);
});

Deno.test("series without labels share one frozen labels object", () => {
  const identities = new SeriesIdentities(10);
  const sample = (deviceId: string) =>
    samplesOfPoll(
      [{
        entry: entryFor("prometheus://h:9100/", { name: "m", deviceId }),
        value: 1,
        metricId: "m",
        labels: {},
        seriesKey: "m",
      }],
      T,
      T,
      identities,
    ).samples[0]!;
  const [a, b] = [sample("d1"), sample("d2")];
  assert.ok(a.series && b.series);
  assert.notEqual(a.series, b.series);
  assert.equal(a.labels, b.labels);
  assert.deepEqual(a.labels, {});
  assert.ok(Object.isFrozen(a.labels));
});

Deno.test("entries of one group that select the same series share its identity, and the group lets it go when none holds it", () => {
  const identities = new SeriesIdentities(10);
  const other = entryFor("prometheus://h:9100/", { name: "cpu", deviceId: "n1", labels: { site: "nancy" } });
  const a = identities.of(entry, 'load{a="1"}', "prom_load", { a: "1" });
  const b = identities.of(other, 'load{a="1"}', "prom_load", { a: "1" });
  // One entry's two texts of the same labels, in another order, are the same series too.
  const c = identities.of(entry, 'load{a="1",b="2"}', "prom_load", { a: "1", b: "2" });
  const d = identities.of(entry, 'load{b="2",a="1"}', "prom_load", { b: "2", a: "1" });
  assert.ok(a && c);
  assert.equal(b, a);
  assert.equal(d, c);
  assert.equal(identities.byPollKey(a.pollKey), a);
  // Two polls later, a series neither entry saw again is swept out of both, and the group forgets it.
  identities.nextPoll();
  identities.of(entry, "load", "prom_load", {});
  identities.nextPoll();
  identities.of(other, "load", "prom_load", {});
  assert.equal(identities.byPollKey(a.pollKey), a, "entry a's cache still holds it");
  identities.of(entry, "load", "prom_load", {});
  for (let i = 0; i < 9; i++) identities.of(entry, `load{i="${i}"}`, "prom_load", { i: String(i) });
  assert.equal(identities.byPollKey(a.pollKey), undefined);
  assert.equal(identities.byPollKey(c.pollKey), undefined);
  const again = identities.of(other, 'load{a="1"}', "prom_load", { a: "1" });
  assert.notEqual(again, a);
  assert.equal(identities.byPollKey(a.pollKey), again);
});

Deno.test("a series is sampled once per poll whichever of two entries has it cached, in either order, poll after poll", () => {
  const other = entryFor("prometheus://h:9100/", { name: "all", deviceId: "n1", labels: { site: "nancy" } });
  const readingOf = (e: typeof entry, a: string, value: number): Reading => ({
    entry: e,
    value,
    metricId: "prom_load",
    labels: { a },
    seriesKey: `load{a="${a}"}`,
  });
  // Room for one identity an entry: each entry caches its first series only.
  const identities = new SeriesIdentities(1);
  for (let poll = 0; poll < 3; poll++) {
    const { samples } = samplesOfPoll(
      [
        readingOf(entry, "1", 1),
        readingOf(other, "2", 2),
        readingOf(other, "1", 3),
        readingOf(entry, "2", 4),
        readingOf(entry, "1", 5),
        readingOf(other, "2", 6),
      ],
      T + poll * 1000,
      T + poll * 1000,
      identities,
    );
    assert.deepEqual(samples.map((s) => [s.labels.a, s.value, s.series !== undefined]), [
      ["1", 1, true],
      ["2", 2, true],
    ]);
  }
  // Uncached first: the sample without an identity is found by the one with it.
  const fresh = new SeriesIdentities(1);
  const { samples } = samplesOfPoll(
    [readingOf(entry, "1", 1), readingOf(entry, "2", 2), readingOf(other, "2", 3), readingOf(other, "1", 4)],
    T,
    T,
    fresh,
  );
  assert.deepEqual(samples.map((s) => [s.labels.a, s.value, s.series !== undefined]), [["1", 1, true], [
    "2",
    2,
    false,
  ]]);
});

Deno.test("a series of an entry without labels keeps the reading's frozen labels, not a copy, and a copy of labels that may change", () => {
  const identities = new SeriesIdentities(10);
  const bare = entryFor("prometheus://h:9100/", { name: "all", deviceId: "n1" });
  const frozen = Object.freeze({ a: "1" });
  const mutable = { a: "2" };
  const { samples } = samplesOfPoll(
    [
      { entry: bare, value: 1, metricId: "prom_load", labels: frozen, seriesKey: 'load{a="1"}' },
      { entry: bare, value: 1, metricId: "prom_load", labels: mutable, seriesKey: 'load{a="2"}' },
      { entry, value: 1, metricId: "prom_load", labels: frozen, seriesKey: 'load{a="1"}' },
    ],
    T,
    T,
    identities,
  );
  const [shared, copied, merged] = samples;
  assert.equal(shared!.series!.labels, frozen);
  assert.notEqual(copied!.series!.labels, mutable);
  mutable.a = "3";
  assert.deepEqual(copied!.labels, { a: "2" });
  assert.deepEqual(merged!.labels, { a: "1", site: "nancy" });
  assert.deepEqual(frozen, { a: "1" });
});

Deno.test("a known series' samples taken as columns are those taken as objects: one per series and poll, the same refusals", () => {
  const other = entryFor("prometheus://h:9100/", { name: "all", deviceId: "n1", labels: { site: "nancy" } });
  const huge = { big: "x".repeat(20_000) };
  const readingOf = (e: typeof entry, a: string, value: number, labels: Record<string, string> = { a }): Reading => ({
    entry: e,
    value,
    metricId: "prom_load",
    labels,
    seriesKey: `load{a="${a}"}`,
  });
  const readings = [
    readingOf(entry, "1", 1),
    readingOf(other, "2", 2),
    readingOf(other, "1", 3),
    readingOf(entry, "2", 4),
    readingOf(entry, "1", 5),
    readingOf(entry, "big", 6, huge),
    { ...readingOf(entry, "3", 7), value: "on" },
    { ...readingOf(entry, "4", 8), timestampMs: T - 1000 },
    readingOf(other, "2", 9),
  ];
  const byValue = (a: Sample, b: Sample) => a.value - b.value || (Number.isNaN(a.value) ? 1 : 0);
  // Room for one identity an entry (each entry caches its first series only), then for all.
  for (const room of [1, 10]) {
    const asObjects = new SeriesIdentities(room);
    const asColumns = new SeriesIdentities(room);
    for (let poll = 0; poll < 3; poll++) {
      const at = T + poll * 1000;
      const expected = samplesOfPoll(readings, at, at, asObjects);
      const part: PollPart = { samples: [], known: { series: [], values: [] }, refused: [] };
      new PollSamples(at, at, asColumns).take(readings, 0, readings.length, part);
      assert.ok(part.known!.series.length > 0, "some samples were taken as columns");
      const columns = samplesOf({ timestampMs: at, series: part.known!.series, values: part.known!.values });
      const strip = (samples: Sample[]) => samples.map(({ series: _, ...s }) => s).sort(byValue);
      assert.deepEqual(strip([...columns, ...part.samples]), strip(expected.samples));
      assert.deepEqual(part.refused, expected.refused);
    }
  }
});
