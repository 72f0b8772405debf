import assert from "node:assert/strict";
import { parseMappingFile } from "../../src/config/wattmetre_mapping.ts";

Deno.test("parseMappingFile() accepts what Kwollect accepts: shared ports, and bad values ignored with their line", () => {
  const text = [
    "taurus-1: [wattmetre1-port0, wattmetre1-port1]",
    "taurus-2:",
    "  - wattmetre1-port2",
    "  - wattmetre2-port07",
    "taurus-3: wattmetre1-port3",
    "taurus-4: [wattmetre1-prt4]",
    "taurus-5: [wattmetre1-port2, wattmetre1-port3]",
    "taurus-6: {port: 1}",
    "taurus-7:",
  ].join("\n");
  const { mapping, problems, warnings } = parseMappingFile(text, "/etc/kwollect/mapping.yaml");
  assert.deepEqual(problems, []);
  assert.deepEqual(Object.fromEntries(mapping), {
    "wattmetre1-port0": ["taurus-1"],
    "wattmetre1-port1": ["taurus-1"],
    "wattmetre1-port2": ["taurus-2", "taurus-5"],
    "wattmetre2-port7": ["taurus-2"],
    "wattmetre1-port3": ["taurus-3", "taurus-5"],
  });
  assert.deepEqual(warnings.map((p) => `${p.line}: ${p.message}`), [
    "6: Invalid wattmeter port 'wattmetre1-prt4': expected <wattmetre_id>-port<N>; ignored",
    "8: Expected a list of wattmeter ports; ignored",
    "undefined: Wattmeter ports mapped to several nodes (a shared PSU measures all its nodes together), stored " +
    "without _device_alias: wattmetre1-port2 (taurus-2, taurus-5), wattmetre1-port3 (taurus-3, taurus-5)",
  ]);
  assert.ok(warnings.every((p) => p.file === "/etc/kwollect/mapping.yaml"));
  const broken = parseMappingFile("taurus-1: [wattmetre1-port0\n", "m.yaml");
  assert.equal(broken.problems.length, 1);
  assert.match(broken.problems[0]!.message, /Invalid YAML/);
  assert.deepEqual(parseMappingFile("", "m.yaml"), { mapping: new Map(), problems: [], warnings: [] });
  assert.match(parseMappingFile("- a\n- b\n", "m.yaml").problems[0]!.message, /Expected a mapping of node names/);
});
