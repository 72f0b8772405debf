import assert from "node:assert/strict";
import { type CI_SIZES, ciSize, type ScenarioResult, type ScenarioSize } from "../../scripts/torture/scenario.ts";

/**
 * A torture scenario run as a test at its CI size (one seed): it must pass its criteria, and
 * `check` asserts what else the test holds its counts to.
 */
export function scenarioTest(
  name: string,
  scenario: keyof typeof CI_SIZES,
  run: (size: ScenarioSize) => Promise<ScenarioResult>,
  check: (result: ScenarioResult) => void = () => {},
): void {
  Deno.test(name, async () => {
    const result = await run(ciSize(scenario));
    assert.ok(result.passed, JSON.stringify(result, null, 1));
    check(result);
  });
}
