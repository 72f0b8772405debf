import assert from "node:assert/strict";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { openSpool } from "../../src/spool/spool.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { endpointOf, type Sql } from "../../src/central/connect.ts";
import { setLogSink } from "../../src/log.ts";
import { FakeClock, settle } from "../helpers/fake_clock.ts";
import { testConfig } from "../../scripts/harness/config.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/**
 * The pace of the forwarder's attempts, on fake time. The central side is a connection whose
 * every query fails at once the way postgres.js reports it (a refused TCP connection, or the
 * server's refusal of the password), so only the waits between attempts take time.
 */

function failingConnection(err: Error, attempts: number[], clock: FakeClock): Sql {
  const query = () => {
    attempts.push(clock.monotonic());
    return Promise.reject(err);
  };
  return Object.assign(query, { end: () => Promise.resolve() }) as unknown as Sql;
}

async function attemptTimes(err: Error, fakeMs: number): Promise<{ gaps: number[]; logs: string[] }> {
  const dir = await tempDir("kwollector-test-");
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  const config = testConfig({ spool_path: `${dir}/spool.db`, db_port: 1 });
  const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
  const clock = new FakeClock();
  const attempts: number[] = [];
  const fwd = new Forwarder({
    lease: spool.lease,
    endpoint: endpointOf(config),
    config,
    clock,
    connectFn: () => failingConnection(err, attempts, clock),
  });
  const stop = new AbortController();
  try {
    const running = fwd.run(stop.signal);
    await settle(); // the first attempt fails before any time passes
    await clock.advance(fakeMs);
    stop.abort();
    await running;
  } finally {
    await fwd.close();
    spool.close();
    setLogSink((l) => console.error(l));
    await Deno.remove(dir, { recursive: true });
  }
  return { gaps: attempts.slice(1).map((t, i) => t - attempts[i]!), logs };
}

const refusedConnection = () => Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });

Deno.test("forwarder retries an unreachable central database at least every forward_retry_max_ms, jittered", async () => {
  const { gaps, logs } = await attemptTimes(refusedConnection(), 300_000);
  assert.ok(gaps.length > 100, `${gaps.length + 1} attempts in 300 s`);
  assert.ok(Math.max(...gaps) <= 3000, `longest wait ${Math.max(...gaps)} ms`);
  assert.ok(new Set(gaps).size > gaps.length / 2, "the waits are jittered, not a fixed period");
  assert.equal(logs.filter((l) => l.includes("Central database unreachable")).length, 1);
});

Deno.test("forwarder retries a central database that refuses its password at the slow pace", async () => {
  const refused = Object.assign(new Error('password authentication failed for user "kwuser"'), {
    name: "PostgresError",
    code: "28P01",
  });
  const { gaps, logs } = await attemptTimes(refused, 600_000);
  const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
  assert.ok(gaps.length < 80, `${gaps.length + 1} attempts in 600 s`);
  assert.ok(mean > 5000, `mean wait ${Math.round(mean)} ms`);
  assert.ok(Math.max(...gaps) <= 30_000, `longest wait ${Math.max(...gaps)} ms`);
  assert.ok(logs.some((l) => l.startsWith("ERROR Central database refuses the collector")), logs.join("\n"));
});
