import assert from "node:assert/strict";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { connect, endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import type { Config } from "../../src/config/defaults.ts";
import type { Sample } from "../../src/sample.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { destroyPostgres, type PgCluster, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/**
 * What the forwarder does when delivery resumes: which samples go first after a restart or an
 * outage (the two lanes), and how it waits for a ledger lock another session holds.
 */

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await tempDir("kwollector-test-");
  await setupDatabase(pgConfig(pg, dir));
  await Deno.remove(dir, { recursive: true });
  return pg;
});

/** Samples with values from `from`: the backlog's are small numbers, the fresh ones ≥ 1,000,000. */
function samples(n: number, from: number): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    timestampMs: Date.now() - 60_000 + i,
    deviceId: `node-${(from + i) % 7}`,
    metricId: "power_watt",
    value: from + i,
    labels: {},
  }));
}

function open(config: Config): Spool {
  return openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
}

async function setup(pg: PgCluster, overrides: Record<string, number> = {}) {
  const dir = await tempDir("kwollector-test-");
  const config = pgConfig(pg, dir, { forward_batch_rows: 5000, forward_retry_max_ms: 50, ...overrides });
  const admin = pg.admin("kwdb");
  await admin`TRUNCATE metrics`;
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  setLogLevel("info");
  return { dir, config, admin, logs };
}

function restoreLogs(): void {
  setLogLevel("warning");
  setLogSink((l) => console.error(l));
}

async function centralCount(admin: ReturnType<PgCluster["admin"]>, fresh: boolean): Promise<number> {
  const [row] = fresh
    ? await admin<{ n: number }[]>`SELECT count(*)::int AS n FROM metrics WHERE value >= 1000000`
    : await admin<{ n: number }[]>`SELECT count(*)::int AS n FROM metrics WHERE value < 1000000`;
  return row!.n;
}

Deno.test("forwarder sends a restarted collector's first poll ahead of the backlog it found", async () => {
  const pg = await pgReady;
  const { dir, config, admin } = await setup(pg);
  try {
    const before = open(config);
    await before.writer.append(samples(30_000, 0));
    before.close();
    // The restart: the first poll reaches the spool before the forwarder's first step.
    const spool = open(config);
    await spool.writer.append(samples(10, 1_000_000));
    const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
    assert.equal(await fwd.step(), "sent");
    assert.equal(await centralCount(admin, true), 10, "the first poll waits behind the backlog");
    assert.ok(await centralCount(admin, false) <= 5000);
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 60_000 }), true);
    await fwd.close();
    spool.close();
    assert.equal(await centralCount(admin, false), 30_000);
  } finally {
    restoreLogs();
    await admin.end();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forwarder sends what was polled after an outage ahead of what piled up during it", async () => {
  const pg = await pgReady;
  const { dir, config, admin } = await setup(pg);
  const spool = open(config);
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
  try {
    await spool.writer.append(samples(10, 0));
    assert.equal(await fwd.step(), "sent");
    await pg.stop();
    // Polls go on while every attempt fails.
    for (let i = 0; i < 5; i++) {
      await spool.writer.append(samples(6000, 10 + i * 6000));
      assert.equal(await fwd.step(), "failed");
    }
    await pg.start();
    await spool.writer.append(samples(10, 1_000_000));
    const after = pg.admin("kwdb");
    assert.equal(await fwd.step(), "sent");
    assert.equal(await centralCount(after, true), 10, "samples polled after the outage wait behind its backlog");
    assert.ok(await centralCount(after, false) <= 10 + 5000);
    assert.equal(await fwd.drain({ deadlineMs: performance.now() + 60_000 }), true);
    assert.equal(await centralCount(after, false), 30_010);
  } finally {
    await fwd.close();
    spool.close();
    restoreLogs();
    await admin.end().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forwarder waits for a ledger lock another session holds as a lock wait, one backend at a time", async () => {
  const pg = await pgReady;
  // forward_timeout_ms 2 s: lock waits give up after 500 ms.
  const { dir, config, admin, logs } = await setup(pg, { forward_timeout_ms: 2000 });
  const spool = open(config);
  await spool.writer.append(samples(100, 0));
  // Another session of the Kwollect user (whose activity the forwarder may see in full).
  const holder = connect(pg.endpoint({}));
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  let locked!: (pid: number) => void;
  const holderPid = new Promise<number>((r) => locked = r);
  const holding = holder.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(hashtextextended(${spool.spoolId}::uuid::text, 0))`;
    const [row] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    locked(row!.pid);
    await released;
  });
  const fwd = new Forwarder({ lease: spool.lease, endpoint: endpointOf(config), config });
  try {
    const pid = await holderPid;
    const draining = fwd.drain({ deadlineMs: performance.now() + 120_000 });
    let mostBackends = 0;
    let waitingBackends = 0;
    while (fwd.counters.retries < 4) {
      const [row] = await admin<{ n: number; waiting: number }[]>`
        SELECT count(*)::int AS n, count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS waiting
        FROM pg_stat_activity WHERE application_name = 'kwollector forwarder'`;
      mostBackends = Math.max(mostBackends, row!.n);
      waitingBackends = Math.max(waitingBackends, row!.waiting);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await centralCount(admin, false), 0);
    release();
    await holding;
    assert.equal(await draining, true);
    assert.equal(mostBackends, 1, "retries piled up backends");
    assert.equal(waitingBackends, 1, "no claim was seen waiting for the lock");
    assert.equal(await centralCount(admin, false), 100);
    const started = logs.filter((l) => l.startsWith("WARNING Central database lock held by another session"));
    assert.equal(started.length, 1, logs.join("\n"));
    assert.ok(started[0]!.includes(`lock="ledger lock of spool ${spool.spoolId}"`), started[0]);
    assert.ok(started[0]!.includes("waited_ms=500"), started[0]);
    assert.ok(started[0]!.includes(`holder_pid=${pid}`), started[0]);
    assert.ok(started[0]!.includes('holder_state="idle in transaction"'), started[0]);
    assert.ok(started[0]!.includes('holder_client="127.0.0.1"'), started[0]);
    assert.ok(logs.some((l) => l.startsWith("INFO Central database lock free again")), logs.join("\n"));
    assert.ok(!logs.some((l) => /unreachable|did not answer/.test(l)), logs.join("\n"));
  } finally {
    release();
    await fwd.close();
    spool.close();
    restoreLogs();
    await holder.end();
    await admin.end();
    await Deno.remove(dir, { recursive: true });
  }
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
