import assert from "node:assert/strict";
import {
  followJsonPath,
  formatJsonPath,
  parseJsonPath,
  type PathStep,
} from "../../../src/sources/redfish/json_path.ts";

function steps(text: string): PathStep[] {
  const parsed = parseJsonPath(text);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed;
}

Deno.test("parseJsonPath() reads dot keys, indexes, negative indexes and quoted keys", () => {
  assert.deepEqual(steps("Temperatures[0].ReadingCelsius"), [{ key: "Temperatures" }, { index: 0 }, {
    key: "ReadingCelsius",
  }]);
  assert.deepEqual(steps("PowerDetail[-1].Average"), [{ key: "PowerDetail" }, { index: -1 }, { key: "Average" }]);
  assert.deepEqual(steps("$.Members[2]['@odata.id']"), [{ key: "Members" }, { index: 2 }, { key: "@odata.id" }]);
  assert.deepEqual(steps(`Oem."Hpe".PowerRegulator`), [{ key: "Oem" }, { key: "Hpe" }, { key: "PowerRegulator" }]);
  assert.deepEqual(steps("[1][0]"), [{ index: 1 }, { index: 0 }]);
});

Deno.test("parseJsonPath() rejects paths that select several values or are malformed, naming the place", () => {
  const error = (text: string) => {
    const parsed = parseJsonPath(text);
    assert.ok("error" in parsed, `accepted '${text}'`);
    return parsed.error;
  };
  assert.match(error("Temperatures[*].ReadingCelsius"), /at character 13: '\[\*\]' selects several values/);
  assert.match(error("Temperatures[0:2]"), /selects several values/);
  assert.match(error("$..ReadingCelsius"), /recursive descent/);
  assert.match(error("Temperatures.*"), /wildcard/);
  assert.match(error("Temperatures[0"), /missing '\]'/);
  assert.match(error("Temperatures[x]"), /expected an index such as \[0\] or \[-1\]/);
  assert.match(error("Temperatures..x"), /recursive descent/);
  assert.match(error("Temperatures."), /ends with '\.'/);
  assert.match(error(".Temperatures"), /empty key/);
  assert.match(error("$"), /Empty JSON path/);
});

Deno.test("followJsonPath() finds the value or says which step found nothing", () => {
  const doc = { PowerDetail: [{ Average: 1 }, { Average: 2 }, { Average: 3 }], Name: "x", Reading: null };
  assert.deepEqual(followJsonPath(doc, steps("PowerDetail[-1].Average")), { value: 3 });
  assert.deepEqual(followJsonPath(doc, steps("PowerDetail[0].Average")), { value: 1 });
  assert.deepEqual(followJsonPath(doc, steps("Reading")), { value: null });
  assert.deepEqual(followJsonPath(doc, steps("PowerDetail[3]")), {
    error: "Index [3] is out of range: 'PowerDetail' has 3 elements",
  });
  assert.deepEqual(followJsonPath(doc, steps("PowerDetail[-4]")), {
    error: "Index [-4] is out of range: 'PowerDetail' has 3 elements",
  });
  assert.deepEqual(followJsonPath(doc, steps("Name[0]")), { error: "Cannot apply [0] to 'Name': it is a string" });
  assert.deepEqual(followJsonPath(doc, steps("PowerDetail.Average")), {
    error: "Cannot read key 'Average' of 'PowerDetail': it is an array",
  });
  assert.deepEqual(followJsonPath(doc, steps("Missing")), { error: "No key 'Missing' in the document" });
  assert.deepEqual(followJsonPath(doc, steps("toString")), { error: "No key 'toString' in the document" });
});

Deno.test("formatJsonPath() writes steps back in the form they are parsed from", () => {
  for (const text of ["Temperatures[0].ReadingCelsius", "PowerDetail[-1].Average", 'Members[0]["@odata.id"]']) {
    assert.equal(formatJsonPath(steps(text)), text);
  }
});
