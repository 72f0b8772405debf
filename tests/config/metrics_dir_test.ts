import assert from "node:assert/strict";
import { DEFAULT_LIMITS, loadMetricsDir, parseMetricsText } from "../../src/config/metrics_dir.ts";
import { parseMetricUrl, redactUrl } from "../../src/config/metric_url.ts";
import { buildGroups, protocolsOf } from "../../src/collect/groups.ts";
import { testConfig } from "../../scripts/harness/config.ts";
import { kwollector } from "../../scripts/harness/collector.ts";
import { V8_FLAGS } from "../../scripts/compile.ts";
import { loadGroupsForRun } from "../../src/cli/runtime.ts";
import { setLogSink } from "../../src/log.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

const G5K_DIR = new URL("./fixtures/g5k-metrics.d/", import.meta.url).pathname;

Deno.test("metrics.d accepts a list, a single entry and an empty file, as Kwollect does", async () => {
  const dir = await tempDir("kwollector-test-");
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
  await Deno.writeTextFile(`${dir}/.notes.txt`, "not a metrics file, and hidden");
  const { entries, problems, files } = loadMetricsDir(dir);
  assert.deepEqual(problems, []);
  assert.equal(files, 3);
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

Deno.test("metrics.d reads Grid'5000's generated .conf files, every entry, and skips dot files", async () => {
  const md = loadMetricsDir(G5K_DIR);
  assert.deepEqual(md.problems, []);
  assert.deepEqual(md.warnings, []);
  assert.equal(md.files, 5, "gemini-1, grisou-7, pdu-b3, pdu-empty-1, sgrisou1 (not .old-pdu.conf.swp)");
  const perFile = Object.fromEntries(
    ["gemini-1", "grisou-7", "pdu-b3", "pdu-empty-1", "sgrisou1"].map((f) => [
      f,
      md.entries.filter((e) => e.file.endsWith(`/${f}.conf`)).length,
    ]),
  );
  assert.deepEqual(perFile, { "gemini-1": 6, "grisou-7": 3, "pdu-b3": 6, "pdu-empty-1": 0, sgrisou1: 4 });
  const { groups, problems } = buildGroups(md.entries, testConfig(), await protocolsOf(md.entries));
  assert.deepEqual(problems, [], "every protocol accepts its entries");
  const schemes = new Set(groups.map((g) => g.scheme));
  assert.deepEqual([...schemes].sort(), ["https", "ipmisensor", "prometheus", "snmp", "snmpv1"]);
  const idrac = md.entries.find((e) => e.file.endsWith("/grisou-7.conf") && e.labels.psu === 2)!;
  assert.equal(idrac.line, 19);
  assert.equal(idrac.scaleFactor, 0.1);
  assert.match(idrac.target.path, /\{\{ 1\.3\.6\.1\.4\.1\.674\.10892\.5\.4\.600\.30\.1\.8\.1 == PS2 Current 2 \}\}$/);
  const outlet = md.entries.find((e) => e.deviceId === "pdu-b3-port-a3")!;
  assert.deepEqual(outlet.labels, { _device_alias: "gemini-1", _info: "from single PSU on pdu-b3" });
  assert.equal(outlet.target.scheme, "snmpv1");

  const check = await kwollector(["check", "--metrics_dir", G5K_DIR, "--spool_path", "/nonexistent/spool.db"]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(
    check.stderr,
    new RegExp(
      `metrics_dir ${G5K_DIR}: 5 file\\(s\\), 19 metric entries in \\d+ poll groups; 0 problem\\(s\\), 0 warning\\(s\\)`,
    ),
  );
});

Deno.test("metrics.d with no entry is a warning: check exits 0 and says nothing will be collected", async () => {
  const dir = await tempDir("kwollector-test-");
  await Deno.writeTextFile(`${dir}/pdu-empty-1.conf`, "#\n# generated\n#\n");
  const md = loadMetricsDir(dir);
  assert.deepEqual(md.problems, []);
  assert.deepEqual(md.warnings.map((w) => `${w.file}: ${w.message}`), [
    `${dir}: No metric entry in 1 file(s) read: nothing will be collected`,
  ]);
  const check = await kwollector(["check", "--metrics_dir", dir, "--spool_path", `${dir}/s.db`]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stderr, /No metric entry in 1 file\(s\) read: nothing will be collected/);
  assert.match(check.stderr, /1 file\(s\), 0 metric entries in 0 poll groups; 0 problem\(s\), 1 warning\(s\)/);
});

Deno.test("metrics.d warns about an entry repeating another's series, naming both file:line", async () => {
  const dir = await tempDir("kwollector-test-");
  const entry = (labels: string) =>
    `- name: power\n  device_id: pdu-1-port-3\n  url: snmp://public@pdu-1/1.3.6.1.2.1.1.5.0\n  labels: ${labels}\n`;
  await Deno.writeTextFile(`${dir}/a.conf`, entry('{"_device_alias":"n1","phase":1}'));
  await Deno.writeTextFile(`${dir}/b.conf`, `# copy\n${entry('{"phase":1,"_device_alias":"n1"}')}${entry("{}")}`);
  const md = loadMetricsDir(dir);
  assert.deepEqual(md.warnings.map((w) => `${w.file}:${w.line}: ${w.message}`), [
    `${dir}/b.conf:2: Entry repeats the series of ${dir}/a.conf:1 (device_id 'pdu-1-port-3', name 'power', same labels)`,
  ]);
  assert.equal(md.entries.length, 3);
});

Deno.test("metrics.d reads a symlink to a file and refuses a FIFO, a device and a socket by name, never reading them", async () => {
  const dir = await tempDir("kwollector-test-");
  await Deno.writeTextFile(`${dir}/real.yaml`, "- name: a\n  device_id: d\n  url: prometheus://h:9100/a\n");
  await Deno.symlink(`${dir}/real.yaml`, `${dir}/link.conf`);
  await Deno.symlink("/dev/zero", `${dir}/zero.conf`);
  await Deno.symlink(`${dir}/missing.yaml`, `${dir}/dangling.conf`);
  const mkfifo = await new Deno.Command("mkfifo", { args: [`${dir}/fifo.conf`] }).output();
  assert.ok(mkfifo.success);
  const socket = Deno.listen({ transport: "unix", path: `${dir}/socket.conf` });
  await Deno.mkdir(`${dir}/old`);
  try {
    const md = loadMetricsDir(dir);
    assert.equal(md.entries.length, 2, "real.yaml and its symlink");
    assert.deepEqual(md.problems.map((p) => `${p.file}: ${p.message}`), [
      `${dir}/dangling.conf: Cannot read file: No such file or directory (os error 2): stat '${dir}/dangling.conf'`,
      `${dir}/fifo.conf: Not a regular file (a FIFO): refused, never read`,
      `${dir}/socket.conf: Not a regular file (a socket): refused, never read`,
      `${dir}/zero.conf: Not a regular file (a character device): refused, never read`,
    ]);
    assert.ok(md.warnings.some((w) => w.file === `${dir}/old` && /Subdirectory ignored/.test(w.message)));
  } finally {
    socket.close();
  }
});

Deno.test("metrics.d refuses a file beyond metrics_file_max_bytes or metrics_file_max_entries and loads the others", async () => {
  const dir = await tempDir("kwollector-test-");
  const entries = (n: number, device: string) =>
    Array.from({ length: n }, (_, i) => `- name: m${i}\n  device_id: ${device}\n  url: prometheus://h:9100/m${i}\n`)
      .join("");
  await Deno.writeTextFile(`${dir}/a-big.conf`, entries(400, "big"));
  await Deno.writeTextFile(`${dir}/b-many.conf`, entries(30, "many"));
  await Deno.writeTextFile(
    `${dir}/c-flow.conf`,
    `[${Array.from({ length: 30 }, (_, i) => `{name: f${i}}`).join(", ")}]`,
  );
  await Deno.writeTextFile(`${dir}/d-fine.conf`, entries(3, "fine"));
  const size = (await Deno.stat(`${dir}/a-big.conf`)).size;
  const md = loadMetricsDir(dir, { fileMaxBytes: 4096, fileMaxEntries: 20, maxEntries: 1000 });
  assert.deepEqual(md.problems.map((p) => `${p.file}: ${p.message}`), [
    `${dir}/a-big.conf: File of ${size} bytes is larger than metrics_file_max_bytes (4096): refused`,
    `${dir}/b-many.conf: File of 30 entries has more than metrics_file_max_entries (20): refused`,
    `${dir}/c-flow.conf: File of 30 entries has more than metrics_file_max_entries (20): refused`,
  ]);
  assert.deepEqual(md.entries.map((e) => e.deviceId), ["fine", "fine", "fine"]);
});

Deno.test("metrics.d refuses the file that would exceed metrics_max_entries and keeps the ones before it", async () => {
  const dir = await tempDir("kwollector-test-");
  for (let f = 1; f <= 4; f++) {
    const text = Array.from(
      { length: 10 },
      (_, i) => `- name: m${i}\n  device_id: d${f}\n  url: prometheus://h:9100/m\n`,
    );
    await Deno.writeTextFile(`${dir}/pdu-${f}.conf`, text.join(""));
  }
  const md = loadMetricsDir(dir, { ...DEFAULT_LIMITS, maxEntries: 25 });
  assert.equal(md.entries.length, 20);
  assert.deepEqual(md.problems.map((p) => `${p.file}: ${p.message}`), [
    `${dir}/pdu-3.conf: File refused: its 10 entries would bring metrics.d to 30, more than metrics_max_entries (25)`,
    `${dir}/pdu-4.conf: File refused: its 10 entries would bring metrics.d to 30, more than metrics_max_entries (25)`,
  ]);
});

Deno.test("metrics.d parses a list item by item with the file's line numbers, and other shapes whole", () => {
  const list = parseMetricsText(
    "# head\n\n- name: a\n  device_id: d\n  url: prometheus://h:1/a\n  colour: red\n",
    "l.conf",
  );
  assert.deepEqual(list.problems.map((p) => `${p.line}:${p.key}`), ["6:colour"]);
  const anchors = parseMetricsText(
    "- &base\n  name: a\n  device_id: d\n  url: prometheus://h:1/a\n- *base\n",
    "a.conf",
  );
  assert.deepEqual(anchors.problems, []);
  assert.equal(anchors.entries.length, 2, "an alias to another item's anchor");
  const flow = parseMetricsText("[{name: a, device_id: d, url: 'prometheus://h:1/a'}]", "f.conf");
  assert.equal(flow.entries.length, 1);
  const broken = parseMetricsText("- name: a\n  device_id: [d\n- name: b\n", "b.conf");
  assert.equal(broken.entries.length, 0);
  assert.match(broken.problems[0]!.message, /Invalid YAML/);
  assert.equal(broken.problems[0]!.file, "b.conf");
});

Deno.test("metrics.d loads a 5,000-entry file within the collector's heap limit", async () => {
  const dir = await tempDir("kwollector-test-");
  const lines: string[] = [];
  for (let i = 0; i < 5000; i++) {
    lines.push(
      `- name: pdu_outlet_power_watt\n  device_id: pdu-1-port-${i}\n  labels: {"_device_alias":"node-${i}"}\n` +
        `  url: snmpv1://public@pdu-1.site.example/1.3.6.1.4.1.534.6.6.7.6.5.1.3.0.${i}\n  update_every: 1000\n`,
    );
  }
  await Deno.writeTextFile(`${dir}/pdu-1.conf`, lines.join("\n"));
  const script = `import { loadMetricsDir } from "${new URL("../../src/config/metrics_dir.ts", import.meta.url).href}";
const md = loadMetricsDir(${JSON.stringify(dir)});
console.log(JSON.stringify({ entries: md.entries.length, problems: md.problems.length }));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", V8_FLAGS, script],
    cwd: new URL("../../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr).slice(-500));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), { entries: 5000, problems: 0 });
});

Deno.test("metrics.d refuses an update_every beyond what a timer can hold, with file:line", () => {
  const { entries, problems } = parseMetricsText(
    "- name: monthly\n  device_id: d\n  url: prometheus://h:1/a\n  update_every: 2592000000\n",
    "m.conf",
  );
  assert.equal(entries.length, 0);
  assert.deepEqual(problems.map((p) => `${p.file}:${p.line}: ${p.key}: ${p.message}`), [
    'm.conf:4: update_every: Invalid value "2592000000": expected a whole number of milliseconds from 1 to 2147483647 ' +
    "ms (about 24.8 days), the longest delay a timer can hold",
  ]);
});

Deno.test("metrics.d refuses a file with more than 100 YAML aliases (an alias bomb)", () => {
  const lines = ['- &a {name: x, device_id: d, url: "prometheus://h:1/a", labels: {k: v}}'];
  for (let i = 0; i < 120; i++) lines.push("- *a");
  const { entries, problems } = parseMetricsText(lines.join("\n"), "bomb.conf");
  assert.equal(entries.length, 0);
  assert.deepEqual(problems.map((p) => `${p.file}:${p.line}: ${p.message}`), [
    "bomb.conf:102: More than 100 aliases: refused",
  ]);
});

Deno.test("run logs a metrics.d without entry at warning, naming the directory", async () => {
  const dir = await tempDir("kwollector-test-");
  await Deno.writeTextFile(`${dir}/pdu-empty-1.conf`, "# generated\n");
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  try {
    assert.deepEqual(await loadGroupsForRun(testConfig({ metrics_dir: dir })), []);
  } finally {
    setLogSink((line) => console.error(line));
  }
  assert.deepEqual(lines, [
    `WARNING No metric entry in 1 file(s) read: nothing will be collected where=${JSON.stringify(dir)}`,
  ]);
});
