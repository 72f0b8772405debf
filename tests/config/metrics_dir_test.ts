import assert from "node:assert/strict";
import { loadMetricsDir, parseMetricsText } from "../../src/config/metrics_dir.ts";
import { parseMetricUrl, redactUrl } from "../../src/config/metric_url.ts";

Deno.test("metrics.d accepts a list, a single entry and an empty file, as Kwollect does", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/node-1.yaml`,
    `- name: idrac_power_watth_total
  device_id: node-1
  url: snmp://public@node-1-admin.domain.com/1.3.6.1.4.1.674.10892.5.4.600.60.1.7.1.1
  update_every: 5000

- name: idrac_power_watt
  device_id: node-1
  url: snmp://public@node-1-admin.domain.com/1.3.6.1.4.1.674.10892.5.4.600.30.1.6.1.3
  update_every: 5000
`,
  );
  await Deno.writeTextFile(
    `${dir}/single.yml`,
    "name: load\ndevice_id: node-2\nurl: prometheus://node-2:9100/node_load1\nscale_factor: 0.1\nlabels: {_device_alias: n2}\noptional: true\n",
  );
  await Deno.writeTextFile(`${dir}/empty.yaml`, "");
  await Deno.writeTextFile(`${dir}/notes.txt`, "not a metrics file");
  const { entries, problems } = loadMetricsDir(dir);
  assert.deepEqual(problems, []);
  assert.equal(entries.length, 3);
  assert.equal(entries[0]!.updateEveryMs, 5000);
  assert.equal(entries[0]!.line, 1);
  assert.equal(entries[1]!.line, 6);
  const single = entries.find((e) => e.name === "load")!;
  assert.equal(single.updateEveryMs, 10000);
  assert.equal(single.scaleFactor, 0.1);
  assert.deepEqual(single.labels, { _device_alias: "n2" });
  assert.equal(single.optional, true);
});

Deno.test("metrics.d reports each bad entry with file, line and key, and keeps the good ones", () => {
  const text = `- name: ok
  device_id: d1
  url: prometheus://h:9100/
- name: bad
  device_id: d2
  url: prometheus://h:9100/
  update_every: soon
  colour: blue
- device_id: d3
  url: "not a url"
`;
  const { entries, problems } = parseMetricsText(text, "m.yaml");
  assert.equal(entries.length, 1);
  const lines = problems.map((p) => `${p.file}:${p.line}:${p.key}`);
  assert.ok(lines.includes("m.yaml:7:update_every"), lines.join(","));
  assert.ok(lines.includes("m.yaml:8:colour"), lines.join(","));
  assert.ok(lines.includes("m.yaml:9:name"), lines.join(","));
  assert.ok(lines.includes("m.yaml:10:url"), lines.join(","));
});

Deno.test("parseMetricUrl() splits Kwollect URLs as Python's urlparse does", () => {
  const ipmi = parseMetricUrl("ipmisensor://root:cal%40vin@Node-1-Admin.domain.com:623/20");
  assert.ok(!("error" in ipmi));
  assert.equal(ipmi.username, "root");
  assert.equal(ipmi.password, "cal@vin");
  assert.equal(ipmi.host, "node-1-admin.domain.com");
  assert.equal(ipmi.port, 623);
  assert.equal(ipmi.path, "20");
  const tpl = parseMetricUrl(
    "snmp://public@127.0.0.1/1.3.6.1.2.1.1.9.1.4.{{ 1.3.6.1.2.1.1.9.1.3 == The SNMP Management Architecture MIB. }}",
  );
  assert.ok(!("error" in tpl));
  assert.equal(tpl.path, "1.3.6.1.2.1.1.9.1.4.{{ 1.3.6.1.2.1.1.9.1.3 == The SNMP Management Architecture MIB. }}");
  const rf = parseMetricUrl("https://u:p@bmc/redfish/v1/Chassis/1/Power/FastPowerMeter#PowerDetail[-1].Average");
  assert.ok(!("error" in rf));
  assert.equal(rf.fragment, "PowerDetail[-1].Average");
  const bad = parseMetricUrl("snmp//x");
  assert.ok("error" in bad && bad.error.startsWith("Cannot parse url 'snmp//x'"));
});

Deno.test("parseMetricUrl() never quotes the password in its errors", () => {
  const bad = parseMetricUrl("ipmisensor://root:topsecret@host:99999/1");
  assert.ok("error" in bad);
  assert.ok(!bad.error.includes("topsecret"), bad.error);
  const community = parseMetricUrl("snmp://TopSecretCommunity@pdu:99999/1.3.6.1");
  assert.ok("error" in community);
  assert.ok(!community.error.includes("TopSecretCommunity"), community.error);
  assert.match(community.error, /'snmp:\/\/\*\*\*@pdu:99999\/1\.3\.6\.1'/);
  assert.equal(redactUrl("snmpv3://alice:authpass1:privpass1@pdu/1.3"), "snmpv3://alice:***@pdu/1.3");
});
