import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runOutageRestarts } from "../../scripts/torture/outage_restarts.ts";

Deno.test({
  name: "collector restarted 6 times while PostgreSQL is down delivers the whole backlog exactly once",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runOutageRestarts(ciSize("outage-restarts"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
    assert.equal(Number(result.counts.sigterm) + Number(result.counts.sigkill), 6);
  },
});
