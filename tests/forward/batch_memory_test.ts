/**
 * What a prepared batch keeps alive (src/forward/batch_writer.ts `prepareBatch`): postgres.js
 * keeps for ever the stack of the first query of each statement text, and with it the closures
 * that stack ran through, so a COPY batch's `write` must not hold the batch's rows.
 */
import assert from "node:assert/strict";

/**
 * Prepares a batch for `method` in a child Deno with `gc()` exposed, keeps only its `write`, and
 * tells whether the batch's rows were collected meanwhile.
 */
async function collectedWhileKept(method: string): Promise<boolean> {
  const script = `import { prepareBatch } from "${new URL("../../src/forward/batch_writer.ts", import.meta.url).href}";
import { SpooledRows } from "${new URL("../../src/spool/spooled_rows.ts", import.meta.url).href}";
const series = { id: 1, copyPrefix: "d\\tm\\t{}\\t", problem: undefined };
function prepared() {
  const numbers = new Float64Array(3000);
  for (let i = 0; i < 1000; i++) numbers.set([i + 1, 1_765_000_000_000 + i, i], 3 * i);
  const rows = new SpooledRows(numbers, Array.from({ length: 1000 }, () => series));
  return { collected: new WeakRef(rows), kept: prepareBatch(rows, ${JSON.stringify(method)}).write };
}
const { collected, kept } = prepared();
await new Promise((r) => setTimeout(r, 0));
gc();
await new Promise((r) => setTimeout(r, 0));
console.log(JSON.stringify({ collected: collected.deref() === undefined, kept: typeof kept }));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", script],
    cwd: new URL("../../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr).slice(-500));
  const result = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(result.kept, "function");
  return result.collected;
}

Deno.test("a prepared COPY batch's write does not keep the batch's rows alive", async () => {
  assert.equal(await collectedWhileKept("copy"), true);
});

Deno.test("a prepared INSERT batch's write keeps its rows, which it sends", async () => {
  // The control: the same check sees rows that a write does hold.
  assert.equal(await collectedWhileKept("insert"), false);
});
