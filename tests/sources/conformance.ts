/**
 * The conformance suite every protocol runs against its real peer (Hono-style: one suite, several
 * implementations). A protocol may skip a case only by passing a written reason.
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

export interface ConformanceOptions {
  /** Case name → reason it does not apply to this protocol. */
  skip?: Record<string, string>;
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
    const reason = opts.skip?.[caseName];
    Deno.test({
      name: `${name} source ${caseName}`,
      ignore: reason !== undefined,
      fn: async () => {
        const { fixture, teardown } = await setup();
        try {
          await fn(fixture);
        } finally {
          await teardown();
        }
      },
    });
    if (reason !== undefined) console.log(`skipped: ${name} source ${caseName}: ${reason}`);
  }
}
