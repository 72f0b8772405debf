import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { KILL_PHASES, runKillSweep } from "../../scripts/torture/kill_sweep.ts";

Deno.test({
  name: "collector killed with SIGKILL 24 times at aimed points loses no committed sample and duplicates none",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const result = await runKillSweep(ciSize("kill-sweep"));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
    assert.equal(result.counts.kills, 24);
    for (const phase of KILL_PHASES) assert.equal(result.counts[`kills.${phase}`], 3);
  },
});
