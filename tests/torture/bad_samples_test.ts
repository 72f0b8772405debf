import { runBadSamples } from "../../scripts/torture/bad_samples.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest(
  "samples with impossible timestamps are refused or set aside alone, and every other sample arrives once",
  "bad-samples",
  runBadSamples,
);
