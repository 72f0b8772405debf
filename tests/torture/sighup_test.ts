import { runSighup } from "../../scripts/torture/sighup.ts";
import { scenarioTest } from "./ci_case.ts";

scenarioTest("collector sent SIGHUP reloads metrics.d each time and loses nothing", "sighup", runSighup);
