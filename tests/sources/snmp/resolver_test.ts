import assert from "node:assert/strict";
import { setLogLevel, setLogSink } from "../../../src/log.ts";
import { REFRESH_MS, RETRY_MS, TemplateResolver, type WalkedValue } from "../../../src/sources/snmp/resolver.ts";
import { parseOidTemplate } from "../../../src/sources/snmp/template.ts";

const OID = "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.{{ 1.3.6.1.4.1.13742.6.3.5.3.1.3.1 == node-7 PSU1 }}.5";
const parsed = parseOidTemplate(OID);
if ("error" in parsed) throw new Error(parsed.error);
const TEMPLATES = parsed.templates;
const PREFIX = "1.3.6.1.4.1.13742.6.3.5.3.1.3.1";
const rows = (names: string[]): WalkedValue[] => names.map((text, i) => ({ oid: `${PREFIX}.${i + 1}`, text }));

/** A walk whose answers the test sets, counting calls; time moves only when the test says so. */
function fixture() {
  const state = { now: 0, walks: 0, answer: rows(["node-1 PSU1", "  node-7 PSU1 "]) as WalkedValue[] | Error };
  const resolver = new TemplateResolver(
    (prefix) => {
      assert.equal(prefix, PREFIX);
      state.walks++;
      return state.answer instanceof Error ? Promise.reject(state.answer) : Promise.resolve(state.answer);
    },
    "pdu:161",
    () => state.now,
  );
  const signal = new AbortController().signal;
  return { state, resolver, prepare: () => resolver.prepare(TEMPLATES, signal) };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("snmp templates resolve to the row whose trimmed value matches, in the middle of an OID", async () => {
  const { resolver, prepare } = fixture();
  await prepare();
  assert.deepEqual(resolver.resolve(OID, TEMPLATES), { oid: "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.2.5" });
});

Deno.test("snmp templates are walked again only every 300 s, in the background", async () => {
  const { state, resolver, prepare } = fixture();
  await prepare();
  await prepare();
  state.now = REFRESH_MS - 1;
  await prepare();
  assert.equal(state.walks, 1);
  state.answer = rows(["node-7 PSU1"]);
  state.now = REFRESH_MS;
  await prepare();
  await settle();
  assert.equal(state.walks, 2);
  assert.deepEqual(resolver.resolve(OID, TEMPLATES), { oid: "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.1.5" });
});

Deno.test("snmp templates keep their resolution when a refresh walk fails, retry 30 s later, and warn once", async () => {
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  setLogLevel("info");
  try {
    const { state, resolver, prepare } = fixture();
    await prepare();
    state.answer = new Error("No answer");
    state.now = REFRESH_MS;
    await prepare();
    await settle();
    assert.deepEqual(resolver.resolve(OID, TEMPLATES), { oid: "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.2.5" });
    state.now = REFRESH_MS + RETRY_MS - 1;
    await prepare();
    assert.equal(state.walks, 2);
    state.now = REFRESH_MS + RETRY_MS;
    await prepare();
    await settle();
    assert.equal(state.walks, 3);
    assert.equal(lines.filter((l) => l.includes("walk failed")).length, 1, lines.join("\n"));
    state.answer = rows(["node-7 PSU1"]);
    state.now = REFRESH_MS + 2 * RETRY_MS;
    await prepare();
    await settle();
    assert.equal(lines.filter((l) => l.includes("walk works again")).length, 1, lines.join("\n"));
  } finally {
    setLogLevel("warning");
    setLogSink((line) => console.error(line));
  }
});

Deno.test("snmp templates fail only their entries until a walk finds the text", async () => {
  const { state, resolver, prepare } = fixture();
  state.answer = new Error("No answer from SNMP agent pdu:161");
  await assert.rejects(prepare(), /No answer/);
  assert.match(JSON.stringify(resolver.resolve(OID, TEMPLATES)), /not resolved: No answer from SNMP agent pdu:161/);
  state.answer = rows(["node-1 PSU1"]);
  await prepare();
  assert.match(JSON.stringify(resolver.resolve(OID, TEMPLATES)), /no value under .* equals 'node-7 PSU1'/);
  state.answer = rows(["node-1 PSU1", "node-7 PSU1"]);
  state.now = REFRESH_MS;
  await prepare();
  await settle();
  assert.deepEqual(resolver.resolve(OID, TEMPLATES), { oid: "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.2.5" });
});
