/**
 * The conformance suite every protocol runs against its real peer (Hono-style: one suite, several
 * implementations). A protocol whose behaviour differs on purpose from a case replaces it with its
 * own check of what it does instead, with a written reason: no case is skipped.
 */
import assert from "node:assert/strict";
import type { MetricEntry } from "../../src/config/metrics_dir.ts";
import { configSubset } from "../../src/config/resolve.ts";
import type { Protocol } from "../../src/sources/source.ts";
import { testConfig } from "../../scripts/harness/config.ts";

export interface ConformanceFixture {
  /** Entries the running peer serves, all in one poll group. */
  entries: MetricEntry[];
  /** An entry of the same group that the peer does not know (missing OID, sensor, register). */
  unknownEntry?: MetricEntry;
  /** Entries of an endpoint that never answers (a port nobody listens on, a silent peer). */
  deadEntries: MetricEntry[];
}

/** What a protocol checks in place of a case that does not apply to it, and why. */
export interface ReplacedCase {
  /** Why the case does not apply (printed with the test run). */
  reason: string;
  /** The replacing test's name, a sentence about what the protocol does instead. */
  name: string;
  check: (f: ConformanceFixture) => Promise<void>;
}

export interface ConformanceOptions {
  /** Case name → the check that replaces it for this protocol. */
  replace?: Record<string, ReplacedCase>;
}

export function conformance(
  name: string,
  protocol: Protocol,
  setup: () => Promise<{ fixture: ConformanceFixture; teardown: () => Promise<void> }>,
  opts: ConformanceOptions = {},
): void {
  // Resolved as buildGroups resolves them: a source that reads a key it did not declare fails here.
  const options = configSubset(testConfig(), protocol.configKeys);
  const ctx = { options, timeoutMs: 1500 };
  const cases: Record<string, (f: ConformanceFixture) => Promise<void>> = {
    "accepts its entries at validation": (f) => {
      for (const e of f.entries) assert.equal(protocol.validate(e, options), undefined, e.url);
      return Promise.resolve();
    },
    "groups the entries of one endpoint together": (f) => {
      const keys = new Set(f.entries.map((e) => protocol.groupKey(e)));
      assert.equal(keys.size, 1);
      return Promise.resolve();
    },
    "names its endpoint without credentials": (f) => {
      for (const e of f.entries) {
        if (e.target.password) assert.ok(!protocol.endpoint(e).includes(e.target.password));
      }
      return Promise.resolve();
    },
    "returns a reading for every entry it serves": async (f) => {
      const source = protocol.create(f.entries, ctx);
      try {
        const result = await source.poll(f.entries, AbortSignal.timeout(ctx.timeoutMs));
        assert.deepEqual(result.errors, []);
        for (const e of f.entries) assert.ok(result.readings.some((r) => r.entry === e), `no reading for ${e.url}`);
      } finally {
        await source.close();
      }
    },
    "reports an unknown entry alone and still reads the others": async (f) => {
      assert.ok(f.unknownEntry, "fixture has no unknownEntry");
      const all = [...f.entries, f.unknownEntry];
      const source = protocol.create(all, ctx);
      try {
        const result = await source.poll(all, AbortSignal.timeout(ctx.timeoutMs));
        assert.ok(result.errors.some((e) => e.entry === f.unknownEntry), "unknown entry not reported");
        for (const e of f.entries) assert.ok(result.readings.some((r) => r.entry === e), `no reading for ${e.url}`);
      } finally {
        await source.close();
      }
    },
    "fails the whole poll of a dead device within its timeout": async (f) => {
      const source = protocol.create(f.deadEntries, ctx);
      const started = performance.now();
      try {
        await assert.rejects(source.poll(f.deadEntries, AbortSignal.timeout(ctx.timeoutMs)));
        assert.ok(performance.now() - started < ctx.timeoutMs + 1500, "poll outlived its timeout");
      } finally {
        await source.close();
      }
    },
    "can be closed twice": async (f) => {
      const source = protocol.create(f.entries, ctx);
      await source.close();
      await source.close();
    },
  };
  for (const [caseName, fn] of Object.entries(cases)) {
    const replaced = opts.replace?.[caseName];
    if (replaced) console.log(`${name} source: "${caseName}" replaced by "${replaced.name}": ${replaced.reason}`);
    const check = replaced?.check ?? fn;
    Deno.test(`${name} source ${replaced?.name ?? caseName}`, async () => {
      const { fixture, teardown } = await setup();
      try {
        await check(fixture);
      } finally {
        await teardown();
      }
    });
  }
}
