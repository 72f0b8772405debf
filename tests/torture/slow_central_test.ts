import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runSlowCentral } from "../../scripts/torture/slow_central.ts";

Deno.test({
  name:
    "a locked, slow and refusing central database loses no good row, quarantines the refused ones, never stalls polling",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runSlowCentral(ciSize("slow-central"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
    assert.ok(Number(result.counts.quarantined) > 0);
  },
});
