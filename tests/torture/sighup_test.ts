import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runSighup } from "../../scripts/torture/sighup.ts";

Deno.test({
  name: "collector sent SIGHUP reloads metrics.d each time and loses nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runSighup(ciSize("sighup"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
  },
});
