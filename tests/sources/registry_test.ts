/**
 * The layout that makes adding a protocol one folder, one registry line and one test file
 * (docs/DESIGN.md, "How to add a protocol"): src/sources/ holds the Source interface, the
 * registry and one folder per protocol, and each folder's protocol is proven by a test file that
 * runs the shared conformance suite.
 */
import assert from "node:assert/strict";
import { loadProtocols, SCHEMES } from "../../src/sources/registry.ts";

const SOURCES = new URL("../../src/sources/", import.meta.url);
const TESTS = new URL("./", import.meta.url);

function entries(dir: URL): Deno.DirEntry[] {
  return [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name));
}

const folders = entries(SOURCES).filter((e) => e.isDirectory).map((e) => e.name);

Deno.test("src/sources holds the Source interface, the registry and one folder per protocol, each registered", () => {
  const files = entries(SOURCES).filter((e) => e.isFile).map((e) => e.name);
  assert.deepEqual(files, ["registry.ts", "source.ts"]);
  assert.ok(folders.length >= 5, `protocol folders: ${folders.join(", ")}`);
  const registry = Deno.readTextFileSync(new URL("registry.ts", SOURCES));
  for (const folder of folders) {
    assert.match(
      registry,
      new RegExp(`import\\("\\./${folder}/${folder}\\.ts"\\)`),
      `the registry does not load ${folder}`,
    );
  }
});

Deno.test("every protocol folder has a test file that runs the conformance suite against its peer", () => {
  for (const folder of folders) {
    const file = new URL(`${folder}/${folder}_test.ts`, TESTS);
    const text = Deno.readTextFileSync(file);
    assert.match(text, /from "\.\.\/conformance\.ts"/, `${file.pathname} does not import the conformance suite`);
    assert.match(text, /\bconformance\(/, `${file.pathname} does not run the conformance suite`);
  }
});

/** The modules `root` loads before running any of its code: its static imports, transitively. */
async function staticImports(root: URL): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", root.pathname], stdout: "piped" })
    .output();
  assert.ok(out.success, `deno info ${root.pathname} failed`);
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string; dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[] }[];
    redirects: Record<string, string>;
  };
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const visit = (imported: string) => {
    const specifier = graph.redirects[imported] ?? imported;
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (d.code && !d.isDynamic) visit(d.code.specifier);
    }
  };
  visit(root.href);
  return seen;
}

Deno.test("`kwollector run` loads a protocol's modules, and their npm modules, only when metrics.d names its scheme", async () => {
  const loaded = [...await staticImports(new URL("../../src/cli/run.ts", import.meta.url))];
  assert.ok(loaded.some((s) => s.endsWith("/src/collect/scheduler.ts")), `the module graph was not read: ${loaded}`);
  for (const folder of folders) {
    const mine = loaded.filter((s) => s.includes(`/src/sources/${folder}/`));
    assert.deepEqual(mine, [], `the ${folder} protocol is loaded at start`);
  }
  for (const npm of ["net-snmp", "modbus-serial", "serialport", "@electric-sql/pglite"]) {
    assert.deepEqual(loaded.filter((s) => s.startsWith(`npm:/${npm}@`)), [], `${npm} is loaded at start`);
  }
});

Deno.test("loadProtocols gives the protocol of each scheme asked for, and leaves out a scheme no protocol has", async () => {
  const protocols = await loadProtocols(["snmpv1", "snmp", "lines", "toString"]);
  assert.deepEqual([...protocols.keys()].sort(), ["snmp", "snmpv1"]);
  assert.equal(protocols.get("snmp"), protocols.get("snmpv1"), "one protocol for SNMP's schemes");
  assert.deepEqual([...(await loadProtocols(SCHEMES)).keys()], [...SCHEMES]);
});
