import { ciSize } from "./scenario.ts";
import assert from "node:assert/strict";
import { runSighup } from "./sighup.ts";

Deno.test({
  name: "collector sent SIGHUP reloads metrics.d each time and loses nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runSighup(ciSize("sighup"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
  },
});
