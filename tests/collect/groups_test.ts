import assert from "node:assert/strict";
import { buildGroups } from "../../src/collect/groups.ts";
import type { MetricEntry } from "../../src/config/metrics_dir.ts";
import { loadProtocols, SCHEMES } from "../../src/sources/registry.ts";
import type { Protocol, ProtocolOptions } from "../../src/sources/source.ts";
import { testConfig } from "../../scripts/harness/config.ts";
import { entryFor } from "../../scripts/harness/entries.ts";

/** A protocol declaring two keys, that records what its validate and its sources are given. */
function spyProtocol() {
  const given: { validated: unknown[]; created: { options: unknown; entries: string[]; timeoutMs: number }[] } = {
    validated: [],
    created: [],
  };
  const protocol: Protocol<"snmp_retries" | "redfish_max_body_bytes"> = {
    configKeys: ["snmp_retries", "redfish_max_body_bytes"],
    validate(_entry, options: ProtocolOptions<"snmp_retries" | "redfish_max_body_bytes">) {
      given.validated.push(options);
      return undefined;
    },
    groupKey: (e) => `spy://${e.target.host}`,
    endpoint: (e) => e.target.host,
    create(entries, ctx) {
      given.created.push({ options: ctx.options, entries: entries.map((e) => e.name), timeoutMs: ctx.timeoutMs });
      return { poll: () => Promise.resolve({ readings: [], errors: [] }), close: () => Promise.resolve() };
    },
  };
  return { protocol, given };
}

Deno.test("buildGroups gives a protocol's validate and sources its declared configuration keys and no other", async () => {
  const { protocol, given } = spyProtocol();
  const config = testConfig({ snmp_retries: 7, redfish_max_body_bytes: 2500, db_password: "not-for-sources" });
  const entries: MetricEntry[] = [
    entryFor("spy://a/1", { name: "a1" }),
    entryFor("spy://a/2", { name: "a2" }),
    entryFor("spy://b/1", { name: "b1" }),
  ];
  const { groups, problems } = buildGroups(entries, config, new Map([["spy", protocol as Protocol]]));
  assert.deepEqual(problems, []);
  for (const g of groups) await g.open({ timeoutMs: 900 }).close();
  const expected = { snmp_retries: 7, redfish_max_body_bytes: 2500 };
  assert.equal(given.validated.length, 3);
  for (const options of given.validated) assert.deepEqual(options, expected);
  assert.deepEqual(given.created.map((c) => c.entries), [["a1", "a2"], ["b1"]]);
  for (const c of given.created) {
    assert.deepEqual(c.options, expected);
    assert.ok(Object.isFrozen(c.options), "a source could change the options its protocol shares");
    assert.equal(c.timeoutMs, 900);
  }
  // Resolved once per protocol: every group and every validation sees the same object.
  assert.ok([...given.validated, ...given.created.map((c) => c.options)].every((o) => o === given.validated[0]));
});

Deno.test("no two protocols of the registry read the same configuration key", async () => {
  const protocols = await loadProtocols(SCHEMES);
  const owner = new Map<string, string>();
  for (const [scheme, protocol] of protocols) {
    for (const key of protocol.configKeys) {
      const other = owner.get(key);
      if (other !== undefined && protocols.get(other) !== protocol) {
        assert.fail(`Configuration key '${key}' is read by the protocols of '${other}' and '${scheme}'`);
      }
      owner.set(key, scheme);
    }
  }
  assert.ok(owner.has("snmp_retries") && owner.has("redfish_tls_verify") && owner.has("prometheus_max_series"));
});
