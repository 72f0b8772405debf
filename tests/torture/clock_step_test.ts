import assert from "node:assert/strict";
import { runClockStep } from "../../scripts/torture/clock_step.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "wall clock stepped back and forward by an hour keeps polling, seqs and exactly-once delivery",
  "clock-step",
  runClockStep,
  (result) => {
    assert.equal(result.counts.wrongTimestamps, 0);
  },
);
