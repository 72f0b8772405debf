import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runBadSamples } from "../../scripts/torture/bad_samples.ts";

Deno.test({
  name: "samples with impossible timestamps are refused or set aside alone, and every other sample arrives once",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runBadSamples(ciSize("bad-samples"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
  },
});
