import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { connect } from "../src/central/connect.ts";
import { pgliteEndpoint } from "../scripts/demo/central.ts";
import { servePglite } from "../scripts/demo/pglite_server.ts";
import { destroyPostgres, startPostgres } from "../scripts/peers/postgres.ts";

/**
 * The README's demo, end to end, as a person runs it: `deno run -A scripts/demo.ts`. It must end
 * with exit 0 and its "lost 0, duplicated 0" line, with the embedded central database and with
 * a real PostgreSQL prepared by setup-db.
 */
const DEMO = fileURLToPath(new URL("../scripts/demo.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("..", import.meta.url));

async function runDemo(args: string[]): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DEMO, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The demo takes about 30 s; a hung demo is stopped (it then stops its own collector).
  const killer = setTimeout(() => child.kill("SIGTERM"), 150_000);
  try {
    const out = await child.output();
    const text = new TextDecoder();
    return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
  } finally {
    clearTimeout(killer);
  }
}

function assertNoLoss(result: { code: number; output: string }): void {
  assert.equal(result.code, 0, `demo failed:\n${result.output}`);
  assert.match(result.output, /Result: (\d+) samples polled, \1 in the central table, lost 0, duplicated 0/);
  assert.match(result.output, /backlog [1-9]\d* samples/, "the outage should build a backlog");
  assert.match(result.output, /delivery ledger: [1-9]\d* batches, 0 missing seq ranges/);
}

Deno.test("the demo with the embedded central database loses and duplicates nothing", async () => {
  const result = await runDemo(["--outage_s", "6"]);
  assertNoLoss(result);
  assert.match(result.output, /PGlite/);
});

Deno.test("the demo against a real PostgreSQL runs setup-db and loses and duplicates nothing", async () => {
  const pg = await startPostgres();
  try {
    const result = await runDemo([
      "--db_host",
      pg.host,
      "--db_port",
      String(pg.port),
      "--db_admin",
      "postgres",
      "--db_admin_password",
      "unused-trusted",
      "--db_password",
      "demo-secret",
      "--outage_s",
      "6",
    ]);
    assertNoLoss(result);
    assert.match(result.output, /set up by kwollector setup-db/);
    assert.doesNotMatch(result.output, /demo-secret/, "the password must not be printed");
  } finally {
    await destroyPostgres(pg);
  }
});

/**
 * The demo's claim rests on its embedded server being a faithful PostgreSQL: PGlite is one
 * session, so clients must never see each other's statements, and a client cut off inside a
 * transaction must leave nothing behind nor block the others.
 */
Deno.test("the demo's PGlite server keeps concurrent clients apart and rolls back a cut-off client", async () => {
  const db = await PGlite.create();
  const server = servePglite(db);
  const a = connect(pgliteEndpoint(server.port));
  const b = connect(pgliteEndpoint(server.port));
  try {
    await a`CREATE TABLE t (x int, who text)`;
    // Parameterised statements and transactions from two clients, interleaved.
    const work = (sql: typeof a, who: string) =>
      Promise.all(Array.from({ length: 30 }, (_, i) =>
        sql.begin(async (tx) => {
          await tx`INSERT INTO t SELECT * FROM unnest(${[i, i + 1000]}::int[], ${[who, who]}::text[])`;
          const [row] = await tx`SELECT count(*)::int AS n FROM t WHERE who = ${who} AND x = ${i}`;
          assert.equal(row?.n, 1);
        })));
    await Promise.all([work(a, "a"), work(b, "b")]);
    const counts = await a<
      { who: string; n: number }[]
    >`SELECT who, count(*)::int AS n FROM t GROUP BY who ORDER BY who`;
    assert.deepEqual(counts.map((r) => [r.who, r.n]), [["a", 60], ["b", 60]]);

    // A client cut off inside its transaction (a raw client: postgres.js itself throws an
    // uncaught TypeError when its connection dies inside sql.begin()).
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await raw.write(startupMessage("postgres"));
    await readUntilReady(raw);
    await raw.write(queryMessage("BEGIN; INSERT INTO t VALUES (-1, 'cut')"));
    assert.equal(await readUntilReady(raw), "T", "the raw client should be inside its transaction");
    raw.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("The server no longer answers after a cut-off client")), 10_000);
    });
    const [after] = await Promise.race([
      b<{ n: number }[]>`SELECT count(*)::int AS n FROM t WHERE who = 'cut'`,
      timeout,
    ])
      .finally(() => clearTimeout(timer));
    assert.equal(after?.n, 0);
  } finally {
    await Promise.all([a, b].map((s) => s.end({ timeout: 1 }).catch(() => {})));
    await server.close();
    await db.close();
  }
});

function startupMessage(user: string): Uint8Array {
  const body = new TextEncoder().encode(`user\0${user}\0database\0postgres\0\0`);
  const out = new Uint8Array(8 + body.length);
  const view = new DataView(out.buffer);
  view.setInt32(0, out.length);
  view.setInt32(4, 196608);
  out.set(body, 8);
  return out;
}

function queryMessage(sql: string): Uint8Array {
  const body = new TextEncoder().encode(`${sql}\0`);
  const out = new Uint8Array(5 + body.length);
  out[0] = "Q".charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}

/** Reads server messages up to ReadyForQuery; returns its transaction status (I, T or E). */
async function readUntilReady(conn: Deno.Conn): Promise<string> {
  let buffer = new Uint8Array(0);
  for (;;) {
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getInt32(1);
      if (buffer.length < 1 + length) break;
      const type = String.fromCharCode(buffer[0]!);
      if (type === "E") throw new Error("The server answered with an error");
      if (type === "Z") return String.fromCharCode(buffer[5]!);
      buffer = buffer.slice(1 + length);
    }
    const chunk = new Uint8Array(4096);
    const n = await conn.read(chunk);
    if (n === null) throw new Error("The server closed the connection");
    const joined = new Uint8Array(buffer.length + n);
    joined.set(buffer);
    joined.set(chunk.subarray(0, n), buffer.length);
    buffer = joined;
  }
}
