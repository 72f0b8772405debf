import assert from "node:assert/strict";
import { runOutageRestarts } from "../../scripts/torture/outage_restarts.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "collector restarted 6 times while PostgreSQL is down delivers the whole backlog exactly once",
  "outage-restarts",
  runOutageRestarts,
  (result) => {
    assert.equal(Number(result.counts.sigterm) + Number(result.counts.sigkill), 6);
  },
);
