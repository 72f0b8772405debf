/**
 * A nudged forwarder (`ForwarderOptions.nudged`, the collector's pipeline): idle, it looks at the
 * spool when its owner says new rows were committed, not every forward_interval_ms, and still
 * sends no more often than forward_interval_ms. Real PostgreSQL; the forwarder's waits on a fake
 * clock, so "no look" and "not yet sent" do not depend on the machine's speed.
 */
import assert from "node:assert/strict";
import { Forwarder } from "../../src/forward/forwarder.ts";
import { openSpool, type Spool } from "../../src/spool/spool.ts";
import type { SpoolLease } from "../../src/spool/lease.ts";
import { spoolOptions } from "../../src/cli/runtime.ts";
import { endpointOf } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { FakeClock, settle } from "../helpers/fake_clock.ts";
import { samples } from "./fixtures.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/** The lease, counting the forwarder's looks for new rows (`readRows`). */
function countingReads(lease: SpoolLease): { lease: SpoolLease; reads: () => number } {
  let reads = 0;
  const proxy = new Proxy(lease, {
    get(target, key) {
      const value = Reflect.get(target, key, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (key === "readRows") reads++;
        return value.apply(target, args);
      };
    },
  });
  return { lease: proxy, reads: () => reads };
}

/** Lets real I/O (PostgreSQL's answers) run until `done()` holds, for at most 30 s. */
async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What a test of a nudged forwarder works with, once it has made its first, idle look. */
interface NudgedRig {
  spool: Spool;
  fwd: Forwarder;
  clock: FakeClock;
  /** The forwarder's looks for new rows so far. */
  reads(): number;
  /** Rows in the central table. */
  landed(): Promise<number>;
}

/**
 * Runs `body` with a nudged forwarder (forward_interval_ms 1 s, its waits on a fake clock) over a
 * fresh spool and a real PostgreSQL, and stops and removes everything after it.
 */
async function withNudgedForwarder(body: (rig: NudgedRig) => Promise<void>): Promise<void> {
  const pg = await startPostgres({ timescaledb: false });
  const dir = await tempDir("kwollector-test-");
  try {
    const config = pgConfig(pg, dir, { forward_interval_ms: 1000 });
    await setupDatabase(config);
    const admin = pg.admin("kwdb");
    const landed = async () => ((await admin`SELECT count(*)::int AS n FROM metrics`)[0] as { n: number }).n;
    const spool = openSpool({ ...spoolOptions(config), commitIntervalMs: 1 });
    const clock = new FakeClock();
    const { lease, reads } = countingReads(spool.lease);
    const fwd = new Forwarder({ lease, endpoint: endpointOf(config), config, clock, nudged: true });
    const stop = new AbortController();
    const running = fwd.run(stop.signal);
    try {
      await until(() => reads() > 0 && clock.pendingTimers() > 0, "the first, idle look");
      await body({ spool, fwd, clock, reads, landed });
    } finally {
      stop.abort();
      await running;
      await fwd.close();
      spool.close();
      await admin.end();
    }
  } finally {
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a nudged idle forwarder looks at the spool when nudged, and sends no more often than forward_interval_ms", async () => {
  await withNudgedForwarder(async ({ spool, fwd, clock, reads, landed }) => {
    const idleReads = reads();
    // Idle and not nudged: no look in 4 s (forward_interval_ms 1 s: the periodic look, 4 times).
    await clock.advance(4000);
    await settle();
    assert.equal(reads(), idleReads, "looks while idle and not nudged");

    await spool.writer.append(samples(10));
    fwd.nudge();
    await until(async () => (await landed()) === 10, "the first rows, sent once nudged");

    // New rows within forward_interval_ms of that batch: they wait for the interval.
    await spool.writer.append(samples(5, 10));
    fwd.nudge();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await landed(), 10, "rows sent before forward_interval_ms passed");
    await clock.advance(1000);
    await until(async () => (await landed()) === 15, "the second rows, after forward_interval_ms");
  });
});

/**
 * A nudged forwarder that emptied the spool waits for the next nudge instead of looking again at
 * once (src/forward/forwarder.ts `run`): at 1 s polls, that second look found nothing once a
 * second.
 */
Deno.test("a nudged forwarder that emptied the spool looks again only when nudged", async () => {
  await withNudgedForwarder(async ({ spool, fwd, clock, reads, landed }) => {
    for (let round = 0; round < 3; round++) {
      const before = reads();
      await spool.writer.append(samples(10, round * 10));
      fwd.nudge();
      await until(async () => (await landed()) === 10 * (round + 1), `round ${round}'s rows`);
      // Waiting again (its idle timer set) with nothing queued: the batch's look was the only one.
      await until(() => clock.pendingTimers() > 0, "the idle wait after the batch");
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(reads(), before + 1, `looks for round ${round}'s one batch`);
      await clock.advance(1000);
      await settle();
    }
    // Rows committed without a nudge are still sent, at the longest idle wait.
    await spool.writer.append(samples(4, 100));
    await clock.advance(5000);
    await until(async () => (await landed()) === 34, "the rows that came without a nudge");
  });
});
