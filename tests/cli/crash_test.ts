import assert from "node:assert/strict";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";

const CHILD = new URL("./fixtures/crash_child.ts", import.meta.url).pathname;

async function runChild(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test("an exception thrown from a timer is logged CRITICAL with its stack and exits 1 after the crash hooks", async () => {
  const out = await runChild(["thrown-in-timer"]);
  assert.equal(out.code, 1, out.stderr);
  assert.ok(!out.stdout.includes("survived"));
  assert.match(out.stdout, /crash hook ran/);
  assert.match(out.stderr, /CRITICAL kwollector bug: an error nobody handled/);
  assert.match(out.stderr, /Cannot read properties of undefined/);
  assert.match(out.stderr, /stack="at .*crash_child\.ts/);
});

Deno.test("a rejected promise nobody awaits is logged CRITICAL and exits 1", async () => {
  const out = await runChild(["unhandled-rejection"]);
  assert.equal(out.code, 1, out.stderr);
  assert.ok(!out.stdout.includes("survived"));
  assert.match(out.stderr, /CRITICAL kwollector bug: .*error="Invalid time value"/);
});

Deno.test("postgres.js writing on a connection that just closed (porsager/postgres#1154) is logged and survived", async () => {
  const pg = await startPostgres({ timescaledb: false });
  try {
    const out = await runChild(["postgres-null-write", pg.host, String(pg.port)]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /transaction failed with CONNECTION_CLOSED/);
    assert.match(out.stdout, /survived/);
    // The defect fired (so this test still reproduces it) and was recognised as that defect only.
    assert.match(
      out.stderr,
      /INFO postgres.js wrote to a connection that had just closed \(porsager\/postgres#1154\)/,
    );
    assert.ok(!out.stderr.includes("CRITICAL"), out.stderr);
  } finally {
    await destroyPostgres(pg);
  }
});
