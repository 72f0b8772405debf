import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runSpoolModel } from "../../scripts/torture/spool_model.ts";

Deno.test("spool matches its model through random appends, acks, drops, reopens and SIGKILLs (fixed seeds)", async () => {
  const result = await runSpoolModel(ciSize("spool-model"));
  assert.ok(result.passed, JSON.stringify(result.counts, null, 2) + "\n" + result.notes.join("\n"));
});
