import assert from "node:assert/strict";
import { toSample } from "../../../src/collect/scheduler.ts";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import { log, setLogSink } from "../../../src/log.ts";
import { snmp } from "../../../src/sources/snmp/snmp.ts";
import type { PollResult } from "../../../src/sources/source.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { valueOf, withSnmpd } from "./agent_helpers.ts";
import {
  freeUdpPort,
  NUMERIC_TEXT,
  OIDS,
  PLAIN_TEXT,
  snmpget,
  startSnmpd,
  SYS_NAME,
  V3_USERS,
} from "../../../scripts/peers/snmpd.ts";
import { startSnmpsim } from "../../../scripts/peers/snmpsim.ts";
import { conformance } from "../conformance.ts";

const TIMEOUT_MS = 1500;
// Two tries of 600 ms fit in a poll of TIMEOUT_MS: an unanswered poll fails with "No answer".
const config = testConfig({ snmp_timeout_ms: 600 });
const ctx = { options: config, timeoutMs: TIMEOUT_MS };

function v2c(port: number, oid: string, name = "m"): MetricEntry {
  return entryFor(`snmp://public@127.0.0.1:${port}/${oid}`, { name });
}

async function pollOnce(entries: MetricEntry[], opts: { config?: typeof config } = {}): Promise<PollResult> {
  const source = snmp.create(entries, { options: opts.config ?? config, timeoutMs: TIMEOUT_MS });
  try {
    return await source.poll(entries, AbortSignal.timeout(TIMEOUT_MS));
  } finally {
    await source.close();
  }
}

conformance("snmp", snmp, async () => {
  const agent = await startSnmpd();
  const dead = await freeUdpPort();
  return {
    fixture: {
      entries: [
        v2c(agent.port, OIDS.sysName, "name"),
        v2c(agent.port, OIDS.counter64, "c64"),
        v2c(agent.port, OIDS.gauge, "gauge"),
        v2c(agent.port, OIDS.numericText, "text"),
      ],
      unknownEntry: v2c(agent.port, OIDS.missing, "missing"),
      deadEntries: [v2c(dead, OIDS.sysName)],
    },
    teardown: agent.stop,
  };
});

Deno.test("snmp source reads a Counter64 near 2^64 exactly", () =>
  withSnmpd(async (agent) => {
    // Two pass OIDs per GET: snmpd reuses a pass script's output when the same command repeats.
    const entry = v2c(agent.port, OIDS.counter64);
    const gauge = v2c(agent.port, OIDS.gauge);
    assert.equal(valueOf(await pollOnce([entry, gauge]), entry), 18446744073709551610n);
    await agent.setCounter64(2n ** 64n - 1n);
    assert.equal(valueOf(await pollOnce([entry, gauge]), entry), 18446744073709551615n);
    await agent.setCounter64(2n ** 53n + 1n);
    assert.equal(valueOf(await pollOnce([entry, gauge]), entry), 9007199254740993n);
  }));

Deno.test("snmp source accepts OIDs with a leading dot", () =>
  withSnmpd(async (agent) => {
    const entry = v2c(agent.port, `.${OIDS.sysName}`);
    assert.equal(snmp.validate(entry, config), undefined);
    assert.equal(valueOf(await pollOnce([entry]), entry), SYS_NAME);
  }));

Deno.test("snmp source honours the URL port and defaults to 161", () =>
  withSnmpd(async (agent) => {
    const entry = v2c(agent.port, OIDS.sysName);
    assert.equal(snmp.endpoint(entry), `127.0.0.1:${agent.port}`);
    assert.equal(valueOf(await pollOnce([entry]), entry), SYS_NAME);
    const elsewhere = v2c(await freeUdpPort(), OIDS.sysName);
    assert.notEqual(snmp.groupKey(elsewhere), snmp.groupKey(entry));
    await assert.rejects(pollOnce([elsewhere]), /No answer from SNMP agent 127\.0\.0\.1:\d+/);
    assert.equal(snmp.endpoint(entryFor(`snmp://public@pdu-3.lyon/${OIDS.sysName}`)), "pdu-3.lyon:161");
  }));

Deno.test("snmp source speaks SNMP v1, where a missing OID fails only its own entry", () =>
  withSnmpd(async (agent) => {
    const url = (oid: string) => `snmpv1://public@127.0.0.1:${agent.port}/${oid}`;
    const name = entryFor(url(OIDS.sysName));
    const gauge = entryFor(url(OIDS.gauge));
    const missing = entryFor(url(OIDS.missing));
    const alsoMissing = entryFor(url(`${OIDS.base}.78.0`));
    assert.notEqual(snmp.groupKey(name), snmp.groupKey(v2c(agent.port, OIDS.sysName)));
    const result = await pollOnce([name, missing, gauge, alsoMissing]);
    assert.equal(valueOf(result, name), SYS_NAME);
    assert.equal(valueOf(result, gauge), 1234);
    assert.deepEqual(result.errors.map((e) => e.entry), [missing, alsoMissing]);
    assert.match(result.errors[0]!.message, /noSuchName for 1\.3\.6\.1\.4\.1\.99999\.77\.0/);
  }));

Deno.test("snmp source speaks SNMPv3 at every security level, with SHA/MD5 and AES/DES", () =>
  withSnmpd(async (agent) => {
    const at = `127.0.0.1:${agent.port}/${OIDS.sysName}`;
    const u = V3_USERS;
    const urls = [
      `snmpv3://${u.shaAes.name}:${u.shaAes.authPass}:${u.shaAes.privPass}@${at}`,
      `snmpv3://${u.md5Des.name}:${u.md5Des.authPass}:${u.md5Des.privPass}@${at}?auth=md5&priv=des`,
      `snmpv3://${u.authOnly.name}:${u.authOnly.authPass}@${at}?auth=sha`,
      `snmpv3://${u.noAuth.name}@${at}`,
    ];
    for (const url of urls) {
      const entry = entryFor(url);
      assert.equal(snmp.validate(entry, config), undefined, url);
      assert.ok(!snmp.endpoint(entry).includes("pass"), snmp.endpoint(entry));
      assert.equal(valueOf(await pollOnce([entry]), entry), SYS_NAME, url);
    }
    assert.equal(new Set(urls.map((url) => snmp.groupKey(entryFor(url)))).size, urls.length);
    const wrongAuth = entryFor(`snmpv3://${u.shaAes.name}:wrong-auth-pass:${u.shaAes.privPass}@${at}`);
    await assert.rejects(pollOnce([wrongAuth]), /Wrong Digest/);
    // A wrong privacy password makes the agent drop the request: the agent does not answer.
    const wrongPriv = entryFor(`snmpv3://${u.shaAes.name}:${u.shaAes.authPass}:wrong-priv-pass@${at}`);
    await assert.rejects(pollOnce([wrongPriv]), /No answer/);
  }));

Deno.test("snmp source registers both SNMPv3 passwords as secrets, so logs never show them", () => {
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  try {
    const auth = "auth-secret-9f2c";
    const priv = "priv-secret-71ad";
    assert.equal(snmp.validate(entryFor(`snmpv3://someone:${auth}:${priv}@pdu/1.3.6.1`), config), undefined);
    log("error", `Quoting ${auth} alone, then ${priv} alone`);
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]!.includes(auth) && !lines[0]!.includes(priv), lines[0]);
  } finally {
    setLogSink((line) => console.error(line));
  }
});

Deno.test("snmp source reads every OID of a group larger than one GET", () =>
  withSnmpd(async (agent) => {
    const entries = Array.from(
      { length: OIDS.seriesCount },
      (_, i) => v2c(agent.port, OIDS.series(i + 1), `s${i + 1}`),
    );
    for (const perGet of [50, 7]) {
      const result = await pollOnce(entries, { config: testConfig({ snmp_max_oids_per_request: perGet }) });
      assert.deepEqual(result.errors, []);
      assert.deepEqual(entries.map((e) => valueOf(result, e)), entries.map((_, i) => i + 1));
    }
  }));

Deno.test("snmp source reads an OID shared by several entries once for each", () =>
  withSnmpd(async (agent) => {
    const a = v2c(agent.port, OIDS.gauge, "a");
    const b = v2c(agent.port, `.${OIDS.gauge}`, "b");
    const result = await pollOnce([a, b]);
    assert.equal(valueOf(result, a), 1234);
    assert.equal(valueOf(result, b), 1234);
  }));

Deno.test("snmp source resolves Kwollect OID templates against the agent's tables", () =>
  withSnmpd(async (agent) => {
    const column = (c: number, text: string) =>
      v2c(agent.port, `1.3.6.1.2.1.1.9.1.${c}.{{ .1.3.6.1.2.1.1.9.1.3 == ${text} }}`);
    // Kwollect's install.sh example, then a row whose value shows which row was picked.
    const kwollect = column(4, "The SNMP Management Architecture MIB.");
    const descr = column(3, "  The MIB for Message Processing and Dispatching. ");
    const nowhere = column(3, "No such MIB");
    const plain = v2c(agent.port, OIDS.sysName);
    const result = await pollOnce([kwollect, descr, nowhere, plain]);
    assert.equal(typeof valueOf(result, kwollect), "number");
    assert.equal(valueOf(result, descr), "The MIB for Message Processing and Dispatching.");
    assert.equal(valueOf(result, plain), SYS_NAME);
    assert.deepEqual(result.errors.map((e) => e.entry), [nowhere]);
    assert.match(result.errors[0]!.message, /no value under 1\.3\.6\.1\.2\.1\.1\.9\.1\.3 equals 'No such MIB'/);
    const check = await snmpget(["-v2c", "-c", "public", "-On", `127.0.0.1:${agent.port}`, "1.3.6.1.2.1.1.9.1.3.2"]);
    assert.match(check, /Message Processing and Dispatching/);
  }));

Deno.test("snmp source returns OctetStrings as text: numeric, plain, Latin-1 and binary", () =>
  withSnmpd(async (agent) => {
    const [numeric, plain, latin1, binary] = [OIDS.numericText, OIDS.plainText, OIDS.latin1, OIDS.binary]
      .map((oid) => v2c(agent.port, oid));
    const result = await pollOnce([numeric!, plain!, latin1!, binary!]);
    assert.equal(valueOf(result, numeric!), NUMERIC_TEXT);
    assert.equal(valueOf(result, plain!), PLAIN_TEXT);
    assert.equal(valueOf(result, latin1!), "été");
    assert.equal(valueOf(result, binary!), "00:01:02:ff");
    const sent = Date.now();
    const samples = result.readings.map((r) => toSample(r, sent));
    assert.equal(samples.find((s) => s.labels.value_str === undefined && s.value === 12.5)?.value, 12.5);
    const text = samples.find((s) => s.labels.value_str === PLAIN_TEXT);
    assert.ok(text && Number.isNaN(text.value));
  }));

/** Power OIDs of the PDU recordings (shared/testdata/snmprec/README.md) with their raw values. */
const PDU_OIDS: Record<string, Record<string, number>> = {
  apc_ap8959eu3: {
    "1.3.6.1.4.1.318.1.1.26.4.3.1.5.1": 27,
    "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1": 19677,
    "1.3.6.1.4.1.318.1.1.26.6.3.1.5.1": 13,
    "1.3.6.1.4.1.318.1.1.26.6.3.1.6.1": 231,
  },
  "raritan-pdu_px3": {
    "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.1": 7467,
    "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5": 1665,
    "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.8": 74057676,
    "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.1.5": 143,
  },
  sentry4: {
    "1.3.6.1.4.1.1718.4.1.3.3.1.3.1.1": 1701,
    "1.3.6.1.4.1.1718.4.1.3.3.1.10.1.1": 8937,
    "1.3.6.1.4.1.1718.4.1.4.3.1.3.1.1.1": 560,
    "1.3.6.1.4.1.1718.4.1.5.3.1.3.1.1.1": 2079,
  },
};

Deno.test({
  name: "snmp source reads the power OIDs of real PDU recordings as snmpget does",
  fn: async () => {
    const sim = await startSnmpsim(Object.keys(PDU_OIDS));
    try {
      for (const [community, oids] of Object.entries(PDU_OIDS)) {
        const entries = Object.keys(oids).map((oid) =>
          entryFor(`snmp://${community}@127.0.0.1:${sim.port}/.${oid}`, { name: oid })
        );
        const result = await pollOnce(entries);
        assert.deepEqual(result.errors, []);
        for (const entry of entries) {
          const oid = entry.name;
          const out = await snmpget(["-v2c", "-c", community, "-On", `127.0.0.1:${sim.port}`, oid]);
          const m = /^\.([0-9.]+) = (?:INTEGER|Gauge32): (-?\d+)\s*$/.exec(out);
          assert.ok(m && m[1] === oid, `unexpected snmpget output: ${out}`);
          assert.equal(valueOf(result, entry), Number(m[2]), `${community} ${oid}`);
          assert.equal(valueOf(result, entry), oids[oid], `${community} ${oid} (README value)`);
        }
      }
    } finally {
      await sim.stop();
    }
  },
});

Deno.test("snmp source fails an unreachable agent within its timeout while another agent keeps answering", () =>
  withSnmpd(async (agent) => {
    const live = v2c(agent.port, OIDS.gauge);
    const dead = v2c(await freeUdpPort(), OIDS.gauge);
    const liveSource = snmp.create([live], ctx);
    const deadSource = snmp.create([dead], ctx);
    try {
      const started = performance.now();
      let deadSettled = false;
      const deadPoll = deadSource.poll([dead], AbortSignal.timeout(TIMEOUT_MS)).finally(() => {
        deadSettled = true;
      });
      deadPoll.catch(() => {});
      for (let i = 0; i < 3; i++) {
        assert.equal(valueOf(await liveSource.poll([live], AbortSignal.timeout(TIMEOUT_MS)), live), 1234);
      }
      assert.equal(deadSettled, false, "the live agent waited for the dead one");
      await assert.rejects(deadPoll, /No answer from SNMP agent/);
      assert.ok(performance.now() - started < TIMEOUT_MS + 500, "dead agent outlived its timeout");
    } finally {
      await liveSource.close();
      await deadSource.close();
    }
  }));

Deno.test("snmp source rejects at once when its poll is aborted, and polls again afterwards", () =>
  withSnmpd(async (agent) => {
    const dead = v2c(await freeUdpPort(), OIDS.gauge);
    const source = snmp.create([dead], { options: config, timeoutMs: 10_000 });
    try {
      const abort = new AbortController();
      const started = performance.now();
      const poll = source.poll([dead], abort.signal);
      setTimeout(() => abort.abort(new Error("stop now")), 100);
      await assert.rejects(poll, /stop now/);
      assert.ok(performance.now() - started < 5_000, "abort was not prompt");
    } finally {
      await source.close();
    }
    const live = v2c(agent.port, OIDS.gauge);
    const again = snmp.create([live], ctx);
    try {
      const abort = new AbortController();
      abort.abort(new Error("too late"));
      await assert.rejects(again.poll([live], abort.signal), /too late/);
      assert.equal(valueOf(await again.poll([live], AbortSignal.timeout(TIMEOUT_MS)), live), 1234);
    } finally {
      await again.close();
    }
  }));

Deno.test("snmp source validation quotes the url without its community or passwords", () => {
  const u = V3_USERS.shaAes;
  const cases: [string, RegExp][] = [
    [
      "snmp://public@pdu/1.3.6.x.1",
      /Invalid OID '1\.3\.6\.x\.1': 'x' is not a number in url 'snmp:\/\/\*\*\*@pdu\/1\.3\.6\.x\.1'/,
    ],
    ["snmp://public@pdu/", /Invalid OID ''/],
    ["snmp://public@pdu/1.3.{{ 1.3.6 = foo }}", /Invalid OID template '\{\{ 1\.3\.6 = foo \}\}'/],
    ["snmp://public@pdu/1.3.{{ 1.3.6 == foo", /Unclosed OID template/],
    ["snmp://public@pdu/1.3.6.{{ 1.3.6 == foo }}7", /Invalid OID/],
    ["snmp://@pdu/1.3.6", /Missing community/],
    ["snmp://public@pdu/1.3.6?auth=sha", /Unexpected query string/],
    [`snmpv3://${u.name}:${u.authPass}:${u.privPass}@pdu/1.3.x`, /url 'snmpv3:\/\/kwsha:\*\*\*@pdu\/1\.3\.x'/],
    [`snmpv3://${u.name}:${u.authPass}@pdu/1.3.6?priv=aes`, /priv needs a privacy password/],
    [`snmpv3://${u.name}:${u.authPass}:${u.privPass}@pdu/1.3.6?auth=sha1`, /Unknown auth protocol 'sha1'/],
    [`snmpv3://${u.name}:${u.authPass}:${u.privPass}@pdu/1.3.6?level=x`, /Unknown parameter 'level'/],
    [`snmpv3://${u.name}:short@pdu/1.3.6`, /shorter than 8 characters/],
    [`snmpv3://${u.name}:${u.authPass}:${u.privPass}:more@pdu/1.3.6`, /Too many ':' .* written %3A/],
  ];
  const colon = entryFor(`snmpv3://${u.name}:auth%3Apass-1:${u.privPass}@pdu/1.3.6`);
  assert.equal(snmp.validate(colon, config), undefined);
  // The auth password is "auth:pass-1" (the group key holds the credentials that select a session).
  assert.ok(snmp.groupKey(colon).includes(`"auth:pass-1","aes","${u.privPass}"`), snmp.groupKey(colon));
  for (const [url, expected] of cases) {
    const problem = snmp.validate(entryFor(url), config);
    assert.match(problem ?? "(accepted)", expected, url);
    assert.ok(!problem!.includes(u.authPass) && !problem!.includes(u.privPass), problem);
    assert.ok(!problem!.includes("public@"), problem);
  }
});
