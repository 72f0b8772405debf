import assert from "node:assert/strict";
import { runSlowCentral } from "../../scripts/torture/slow_central.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "a locked, slow and refusing central database loses no good row, quarantines the refused ones, never stalls polling",
  "slow-central",
  runSlowCentral,
  (result) => {
    assert.ok(Number(result.counts.quarantined) > 0);
  },
);
