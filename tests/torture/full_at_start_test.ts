import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runFullAtStart } from "../../scripts/torture/full_at_start.ts";

Deno.test({
  name: "collector started on a full disk waits for space, never moves its sound spool aside, and delivers it all",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runFullAtStart(ciSize("full-at-start"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
  },
});
