import assert from "node:assert/strict";
import { connect } from "../../src/central/connect.ts";
import { setupDatabase } from "../../src/central/setup.ts";
import { IDLE_IN_TRANSACTION_MS, limitStatements, sessionParameters } from "../../src/forward/session.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig, testConfig } from "../../scripts/harness/config.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/**
 * The forwarder's central session (src/forward/session.ts), against a real PostgreSQL set up by
 * setup-db (whose database and role settings are kwdb's: 1 h idle in transaction, a 5 min
 * statement timeout for the Kwollect user).
 */

const pgReady = startPostgres({ timescaledb: false }).then(async (pg) => {
  const dir = await tempDir("kwollector-test-");
  await setupDatabase(pgConfig(pg, dir));
  await Deno.remove(dir, { recursive: true });
  return pg;
});

const config = testConfig();

async function settings(sql: ReturnType<typeof connect>, names: string[]): Promise<Record<string, string>> {
  const rows = await sql<{ name: string; value: string }[]>`
    SELECT name, current_setting(name) AS value FROM unnest(${names}::text[]) AS name`;
  return Object.fromEntries(rows.map((r) => [r.name, r.value]));
}

Deno.test("forwarder session asks the server to drop a dead client within 25 s, ahead of kwdb's settings", async () => {
  const pg = await pgReady;
  const sql = connect(pg.endpoint({}), { parameters: sessionParameters(config) });
  try {
    assert.deepEqual(
      await settings(sql, [
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "idle_in_transaction_session_timeout",
        "lock_timeout",
      ]),
      {
        tcp_keepalives_idle: "10",
        tcp_keepalives_interval: "5",
        tcp_keepalives_count: "3",
        idle_in_transaction_session_timeout: "15s",
        lock_timeout: "5s",
      },
    );
  } finally {
    await sql.end();
  }
});

Deno.test("forwarder session lowers kwdb's statement_timeout to 90% of forward_timeout_ms", async () => {
  const pg = await pgReady;
  const sql = connect(pg.endpoint({}), { parameters: sessionParameters(config) });
  try {
    assert.equal((await settings(sql, ["statement_timeout"])).statement_timeout, "5min");
    await limitStatements(sql, config);
    assert.equal((await settings(sql, ["statement_timeout"])).statement_timeout, "54s");
  } finally {
    await sql.end();
  }
});

Deno.test("forwarder session keeps a site's statement_timeout lower than its own", async () => {
  const pg = await pgReady;
  const admin = pg.admin("kwdb");
  await admin`ALTER ROLE kwuser IN DATABASE kwdb SET statement_timeout = '1s'`;
  const sql = connect(pg.endpoint({}), { parameters: sessionParameters(config) });
  try {
    await limitStatements(sql, config);
    assert.equal((await settings(sql, ["statement_timeout"])).statement_timeout, "1s");
  } finally {
    await sql.end();
    await admin`ALTER ROLE kwuser IN DATABASE kwdb SET statement_timeout = '5min'`;
    await admin.end();
  }
});

Deno.test("forwarder session left idle inside its batch is ended by the server, which frees the ledger lock", async () => {
  const pg = await pgReady;
  const admin = pg.admin("kwdb");
  const sql = connect(pg.endpoint({}), { parameters: sessionParameters(config) });
  const spoolId = crypto.randomUUID();
  let claimed!: (pid: number) => void;
  const holderPid = new Promise<number>((r) => claimed = r);
  try {
    // A batch whose client stops after its claim (a frozen collector): its callback never returns.
    const batch = sql.begin(async (tx) => {
      await tx`SELECT kwollect_claim(${spoolId}, 'frozen-edge', 1, 10, 10, 'data', now(), now(), 'test')`;
      const [row] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
      claimed(row!.pid);
      await new Promise(() => {});
    });
    // Its end is awaited below; the handler is attached now, before the server ends it.
    const ended = batch.then(() => undefined, (err: Error & { code?: string }) => err);
    const pid = await holderPid;
    const holding = async () =>
      (await admin<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_locks WHERE pid = ${pid} AND locktype = 'advisory' AND granted`)[0]!.n;
    assert.equal(await holding(), 1);
    // The server ends the session after idle_in_transaction_session_timeout (15 s); wait up to 4 times that.
    for (let i = 0; i < (4 * IDLE_IN_TRANSACTION_MS) / 250 && await holding() > 0; i++) {
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(await holding(), 0, "the orphaned batch still holds the ledger lock");
    assert.equal((await ended)?.code, "CONNECTION_CLOSED");
    const log = await Deno.readTextFile(`${pg.dir}/pg.log`);
    assert.match(log, /terminating connection due to idle-in-transaction timeout/);
    // The range was never committed: another claim of it succeeds.
    const [again] = await admin<{ ok: boolean }[]>`
      SELECT kwollect_claim(${spoolId}, 'next-edge', 1, 10, 10, 'data', now(), now(), 'test') AS ok`;
    assert.equal(again!.ok, true);
  } finally {
    await sql.end({ timeout: 1 });
    await admin.end();
  }
});

// A hook, not a test: a filtered run (`deno test --filter`) stops the cluster too.
Deno.test.afterAll(async () => {
  await destroyPostgres(await pgReady);
});
