import { runSpoolDeleted } from "../../scripts/torture/spool_deleted.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "spool file deleted three times under the running collector is written back and loses nothing",
  "spool-deleted",
  runSpoolDeleted,
);
