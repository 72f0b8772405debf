import assert from "node:assert/strict";
import { kwollector, sleep, startCollector } from "../../scripts/harness/collector.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

const COMMUNITY = "TopSecretCommunity";
const PRIV = "PrivSecret99";
const DB_PASSWORD = "DbSecretInEnv";

async function configWithBadSnmpUrls(): Promise<string> {
  const dir = await tempDir("kwollector-test-");
  await Deno.mkdir(`${dir}/metrics.d`);
  await Deno.writeTextFile(
    `${dir}/metrics.d/pdu.yaml`,
    [
      "- name: power",
      "  device_id: pdu-1",
      `  url: snmp://${COMMUNITY}@pdu-1:99999/1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5`,
      "- name: outlet",
      "  device_id: pdu-1",
      `  url: snmp://${COMMUNITY}@pdu-1/1.3.6.x.{{ bad template`,
      "- name: temp",
      "  device_id: pdu-1",
      `  url: snmpv3://ops:AuthSecret99:${PRIV}@pdu-1/1.3.6.1?priv=rot13`,
      "",
    ].join("\n"),
  );
  await Deno.writeTextFile(
    `${dir}/k.yaml`,
    `metrics_dir: ${dir}/metrics.d\nspool_path: ${dir}/spool/spool.db\ndb_host: 127.0.0.1\ndb_port: 1\n`,
  );
  return `${dir}/k.yaml`;
}

Deno.test("check names the bad SNMP entries by file and line without quoting a community or a v3 key", async () => {
  const config = await configWithBadSnmpUrls();
  const out = await kwollector(["check", config]);
  assert.equal(out.code, 2);
  assert.match(out.stderr, /pdu\.yaml:3: url: /);
  assert.match(out.stderr, /pdu\.yaml:4: url: /);
  assert.match(out.stderr, /pdu\.yaml:7: url: .*rot13/);
  for (const secret of [COMMUNITY, PRIV, "AuthSecret99"]) {
    assert.ok(!out.stderr.includes(secret) && !out.stdout.includes(secret), `${secret} in: ${out.stderr}`);
  }
});

Deno.test("run logs neither SNMP secrets nor a database password given in the environment", async () => {
  const config = await configWithBadSnmpUrls();
  const collector = startCollector(["run", config, "--log_level", "debug"], {
    env: { KWOLLECT_DB_PASSWORD: DB_PASSWORD },
  });
  await sleep(2500);
  const status = await collector.stop();
  assert.equal(status.code, 0, collector.logs().join("\n"));
  const logs = collector.logs().join("\n");
  assert.match(logs, /Metric entry ignored/);
  assert.match(logs, /Central database unreachable/);
  for (const secret of [COMMUNITY, PRIV, "AuthSecret99", DB_PASSWORD]) {
    assert.ok(!logs.includes(secret), `${secret} in the log`);
  }
  const statusOut = await kwollector(["status", config, "--json"]);
  assert.ok(!statusOut.stdout.includes(COMMUNITY));
});
