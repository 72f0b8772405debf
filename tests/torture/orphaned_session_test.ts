import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runOrphanedSession } from "../../scripts/torture/orphaned_session.ts";

Deno.test({
  name: "collector that loses power mid-batch (between statements and inside COPY) resumes delivery within a minute",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runOrphanedSession(ciSize("orphaned-session"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
    assert.equal(result.counts.lockWaitsLogged, 2);
  },
});
