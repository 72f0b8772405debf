import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runClockStep } from "../../scripts/torture/clock_step.ts";

Deno.test({
  name: "wall clock stepped back and forward by an hour keeps polling, seqs and exactly-once delivery",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runClockStep(ciSize("clock-step"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
    assert.equal(result.counts.wrongTimestamps, 0);
  },
});
