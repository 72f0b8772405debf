import assert from "node:assert/strict";
import { KILL_PHASES, runKillSweep } from "../../scripts/torture/kill_sweep.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "collector killed with SIGKILL 24 times at aimed points loses no committed sample and duplicates none",
  "kill-sweep",
  runKillSweep,
  (result) => {
    assert.equal(result.counts.kills, 24);
    for (const phase of KILL_PHASES) assert.equal(result.counts[`kills.${phase}`], 3);
  },
);
