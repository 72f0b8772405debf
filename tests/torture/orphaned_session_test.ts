import assert from "node:assert/strict";
import { runOrphanedSession } from "../../scripts/torture/orphaned_session.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "collector that loses power mid-batch (between statements and inside COPY) resumes delivery within a minute",
  "orphaned-session",
  runOrphanedSession,
  (result) => {
    assert.equal(result.counts.lockWaitsLogged, 2);
    // Each restarted collector drained a backlog after its wait: the pipelined backfill was in play.
    assert.equal(result.counts.backlogsDrained, 2);
  },
);
