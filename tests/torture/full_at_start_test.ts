import { runFullAtStart } from "../../scripts/torture/full_at_start.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "collector started on a full disk waits for space, never moves its sound spool aside, and delivers it all",
  "full-at-start",
  runFullAtStart,
);
