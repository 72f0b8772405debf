import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runSpoolDeleted } from "../../scripts/torture/spool_deleted.ts";

Deno.test({
  name: "spool file deleted three times under the running collector is written back and loses nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runSpoolDeleted(ciSize("spool-deleted"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
  },
});
