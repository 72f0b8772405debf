import assert from "node:assert/strict";
import { ipmi } from "../../../src/sources/ipmi/ipmi.ts";
import { parseSensorOutput } from "../../../src/sources/ipmi/sensors_csv.ts";
import type { PollResult } from "../../../src/sources/source.ts";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import { type Sample, samplesOf } from "../../../src/sample.ts";
import { buildGroups, protocolsOf } from "../../../src/collect/groups.ts";
import { Scheduler } from "../../../src/collect/scheduler.ts";
import { systemClock } from "../../../src/clock.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { DEFAULT_SENSORS, freeUdpPort, type IpmiSim, startIpmiSim } from "../../../scripts/peers/ipmi_sim.ts";
import { conformance } from "../conformance.ts";
import { tempDir } from "../../../scripts/harness/temp_dir.ts";

const USER = "admin";
/** `#` starts a comment in freeipmi's configuration file and `\\` escapes; ipmi_sim cannot hold a `"`. */
const PASSWORD = "s3cr#t\\pw";
const OPTIONS = "?workaround_flags=opensesspriv";
const config = testConfig();

function bmcUrl(port: number, sensor: string | number, password = PASSWORD): string {
  return `ipmisensor://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${
    encodeURIComponent(String(sensor))
  }${OPTIONS}`;
}

function sensorEntry(port: number, sensor: string | number, name = `sensor_${sensor}`): MetricEntry {
  return entryFor(bmcUrl(port, sensor), { name, deviceId: "node-1" });
}

function readingOf(result: PollResult, entry: MetricEntry): unknown {
  const r = result.readings.find((x) => x.entry === entry);
  assert.ok(r, `no reading for ${entry.name}: ${JSON.stringify(result.errors.map((e) => e.message))}`);
  return r.value;
}

/** Processes that are children of this test process running `name`, zombies included. */
function children(name: string): { pid: number; state: string }[] {
  const found: { pid: number; state: string }[] = [];
  for (const d of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(d.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${d.name}/stat`);
    } catch {
      continue; // exited meanwhile
    }
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const [state = "", ppid = ""] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (comm === name && Number(ppid) === Deno.pid) found.push({ pid: Number(d.name), state });
  }
  return found;
}

async function psOutput(): Promise<string> {
  const out = await new Deno.Command("ps", { args: ["-eo", "pid,args"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout);
}

/** What `ipmi-sensors` itself prints for the simulated BMC (its own cache directory and config). */
async function ipmiSensorsOwnOutput(sim: IpmiSim): Promise<Map<string, number | undefined>> {
  const dir = await tempDir("kwollector-test-");
  try {
    await Deno.writeTextFile(
      `${dir}/conf`,
      `username ${USER}\npassword "${PASSWORD.replace(/[\\#"]/g, "\\$&")}"\nworkaround-flags opensesspriv\n`,
    );
    const out = await new Deno.Command("ipmi-sensors", {
      args: [
        "-h",
        `127.0.0.1:${sim.port}`,
        "--driver-type=LAN_2_0",
        `--config-file=${dir}/conf`,
        `--sdr-cache-directory=${dir}`,
        "--quiet-cache",
        "--comma-separated-output",
        "--no-header-output",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const { rows, malformed } = parseSensorOutput(new TextDecoder().decode(out.stdout));
    assert.deepEqual(malformed, []);
    return new Map(rows.map((r) => [r.recordId, r.reading]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

conformance("ipmisensor", ipmi, async () => {
  const sim = await startIpmiSim({ username: USER, password: PASSWORD });
  const dead = await freeUdpPort();
  return {
    fixture: {
      entries: [sensorEntry(sim.port, 2), sensorEntry(sim.port, "12V Rail"), sensorEntry(sim.port, 4)],
      unknownEntry: sensorEntry(sim.port, 99),
      deadEntries: [sensorEntry(dead, 2)],
    },
    teardown: sim.stop,
  };
});

Deno.test("ipmi source reads the values ipmi-sensors itself prints, by record ID and by name", async () => {
  const sim = await startIpmiSim({ username: USER, password: PASSWORD });
  try {
    const own = await ipmiSensorsOwnOutput(sim);
    assert.deepEqual(
      [...own],
      [["2", 45], ["3", 12], ["4", 3000], ["5", 21], ["6", undefined]],
      "the simulated BMC no longer serves the expected sensors",
    );
    const byId = DEFAULT_SENSORS.filter((s) => s.scanning !== false).map((s) =>
      sensorEntry(sim.port, sim.recordId(s.number), `id_${s.number}`)
    );
    const byName = DEFAULT_SENSORS.filter((s) => s.scanning !== false).map((s) =>
      sensorEntry(sim.port, s.name, `name_${s.number}`)
    );
    for (const entries of [byId, byName, [...byId, ...byName]]) {
      const source = ipmi.create(entries, { options: config, timeoutMs: 5000 });
      try {
        const result = await source.poll(entries, AbortSignal.timeout(5000));
        assert.deepEqual(result.errors, []);
        for (const e of entries) {
          const sensorNumber = Number(e.name.split("_")[1]);
          assert.equal(readingOf(result, e), own.get(String(sim.recordId(sensorNumber))), e.name);
        }
      } finally {
        await source.close();
      }
    }
  } finally {
    await sim.stop();
  }
});

Deno.test("ipmi source follows a reading that changes between polls", async () => {
  const sim = await startIpmiSim({ username: USER, password: PASSWORD });
  const entries = [sensorEntry(sim.port, 2)];
  const source = ipmi.create(entries, { options: config, timeoutMs: 5000 });
  try {
    assert.equal(readingOf(await source.poll(entries, AbortSignal.timeout(5000)), entries[0]!), 45);
    await sim.setRaw(1, 71);
    // ipmi_sim re-reads the file every second.
    let seen: unknown = 45;
    for (let i = 0; i < 30 && seen === 45; i++) {
      await new Promise((r) => setTimeout(r, 200));
      seen = readingOf(await source.poll(entries, AbortSignal.timeout(5000)), entries[0]!);
    }
    assert.equal(seen, 71);
  } finally {
    await source.close();
    await sim.stop();
  }
});

Deno.test("ipmi source reports N/A, unknown and ambiguous sensors per entry and reads the rest", async () => {
  const sensors = [
    ...DEFAULT_SENSORS,
    { number: 7, name: "Fan 1", type: "Fan" as const, raw: 20, m: 50 }, // a second "Fan 1"
  ];
  const sim = await startIpmiSim({ username: USER, password: PASSWORD, sensors });
  const good = sensorEntry(sim.port, 2);
  const comma = sensorEntry(sim.port, "Inlet, Front");
  const na = sensorEntry(sim.port, 6);
  const unknownId = sensorEntry(sim.port, 42);
  const unknownName = sensorEntry(sim.port, "No Such Sensor");
  const ambiguous = sensorEntry(sim.port, "Fan 1");
  const all = [good, comma, na, unknownId, unknownName, ambiguous];
  const source = ipmi.create(all, { options: config, timeoutMs: 5000 });
  try {
    for (const entries of [all, [good, na, unknownId]]) {
      const result = await source.poll(entries, AbortSignal.timeout(5000));
      assert.equal(readingOf(result, good), 45);
      if (entries.includes(comma)) assert.equal(readingOf(result, comma), 21);
      const message = (e: MetricEntry) => result.errors.find((x) => x.entry === e)?.message ?? "";
      assert.match(message(na), /Sensor 6 'Dead Rail' on BMC admin@127\.0\.0\.1:\d+ reads N\/A/);
      assert.match(message(unknownId), /No sensor with record ID 42 on BMC/);
      if (entries.includes(ambiguous)) {
        assert.match(message(unknownName), /No sensor named 'No Such Sensor'/);
        assert.match(message(ambiguous), /Sensor name 'Fan 1' is ambiguous .*record IDs 4, 7/);
      }
      assert.equal(result.errors.length, entries.length - (entries.includes(comma) ? 2 : 1));
    }
  } finally {
    await source.close();
    await sim.stop();
  }
});

Deno.test("ipmi source keeps its SDR cache and config private, reuses the cache, and removes them on close", async () => {
  const sim = await startIpmiSim({ username: USER, password: PASSWORD });
  const entries = [sensorEntry(sim.port, 2)];
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  const before = new Set([...Deno.readDirSync(tmp)].map((d) => d.name));
  const source = ipmi.create(entries, { options: config, timeoutMs: 5000 });
  try {
    await source.poll(entries, AbortSignal.timeout(5000));
    const created = [...Deno.readDirSync(tmp)].map((d) => d.name)
      .filter((n) => n.startsWith("kwollector-ipmi-") && !before.has(n));
    assert.equal(created.length, 1, `new private directories: ${created}`);
    const dir = `${tmp}/${created[0]}`;
    assert.equal(Deno.statSync(dir).mode! & 0o777, 0o700);
    assert.equal(Deno.statSync(`${dir}/freeipmi.conf`).mode! & 0o777, 0o600);
    assert.equal(Deno.statSync(`${dir}/sdr-cache`).mode! & 0o777, 0o700);
    const cacheFiles = () =>
      [...Deno.readDirSync(`${dir}/sdr-cache/.freeipmi/sdr-cache`)].map((f) => {
        const path = `${dir}/sdr-cache/.freeipmi/sdr-cache/${f.name}`;
        return `${path} ${Deno.statSync(path).mtime?.getTime()}`;
      });
    const cache = cacheFiles();
    assert.equal(cache.length, 1);
    await new Promise((r) => setTimeout(r, 20));
    await source.poll(entries, AbortSignal.timeout(5000));
    assert.deepEqual(cacheFiles(), cache, "the SDR cache was rebuilt although the SDR did not change");
    await source.close();
    assert.throws(() => Deno.statSync(dir), Deno.errors.NotFound);
  } finally {
    await source.close();
    await sim.stop();
  }
});

Deno.test("ipmi source rebuilds its SDR cache when the BMC's SDR changed", async () => {
  let sim = await startIpmiSim({ username: USER, password: PASSWORD });
  const port = sim.port;
  const entries = [sensorEntry(port, 4)];
  const renamed = sensorEntry(port, "Fan Renamed");
  const source = ipmi.create([...entries, renamed], { options: config, timeoutMs: 5000 });
  try {
    const first = await source.poll([...entries, renamed], AbortSignal.timeout(5000));
    assert.equal(readingOf(first, entries[0]!), 3000);
    assert.ok(first.errors.some((e) => e.entry === renamed));
    await sim.stop();
    // freeipmi tells a changed SDR by the BMC's addition/erase timestamps, which have 1 s resolution.
    await new Promise((r) => setTimeout(r, 1100));
    const sensors = DEFAULT_SENSORS.map((s) => s.number === 4 ? { ...s, name: "Fan Renamed", raw: 70 } : s);
    sim = await startIpmiSim({ username: USER, password: PASSWORD, sensors, port });
    const second = await source.poll([...entries, renamed], AbortSignal.timeout(5000));
    assert.deepEqual(second.errors, []);
    assert.equal(readingOf(second, renamed), 3500);
  } finally {
    await source.close();
    await sim.stop();
  }
});

Deno.test("ipmi source kills ipmi-sensors of a BMC that never answers while another BMC keeps its schedule", async () => {
  const sim = await startIpmiSim({ username: USER, password: PASSWORD });
  const dead = await freeUdpPort();
  const live = [sensorEntry(sim.port, 2, "cpu_temp"), sensorEntry(sim.port, 3, "rail")].map((e) => ({
    ...e,
    updateEveryMs: 500,
  }));
  const silent = { ...sensorEntry(dead, 2, "dead_temp"), updateEveryMs: 1000 };
  // Each poll of the dead BMC fails at 900 ms, so 4.2 s see several of them.
  const timed = { ...config, poll_timeout_ms: 900 };
  const { groups, problems } = buildGroups([...live, silent], timed, await protocolsOf([...live, silent]));
  assert.deepEqual(problems, []);
  assert.equal(groups.length, 2);
  const delivered: Sample[] = [];
  const scheduler = new Scheduler({
    groups,
    config: timed,
    clock: systemClock,
    deliver: (samples) => {
      delivered.push(...samplesOf(samples));
      return Promise.resolve();
    },
  });
  let mostAtOnce = 0;
  scheduler.start();
  try {
    const until = performance.now() + 4200;
    while (performance.now() < until) {
      mostAtOnce = Math.max(mostAtOnce, children("ipmi-sensors").length);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await scheduler.stop();
    await sim.stop();
  }
  assert.deepEqual(children("ipmi-sensors"), [], "ipmi-sensors processes (or zombies) left behind");
  assert.ok(mostAtOnce >= 1, "never saw an ipmi-sensors child");
  const byGroup = Object.fromEntries(
    scheduler.counters().map((c) => [c.group.includes(`:${dead} `) ? "dead" : "live", c.counters]),
  );
  assert.ok(byGroup.dead!.pollsFailed >= 3, `dead BMC: ${JSON.stringify(byGroup.dead)}`);
  assert.equal(byGroup.dead!.pollsOk, 0);
  // The live BMC is polled at start, then every 500 ms for 4.2 s: 8 slots, none failed, all on time.
  assert.ok(byGroup.live!.pollsOk >= 7, `live BMC: ${JSON.stringify(byGroup.live)}`);
  assert.equal(byGroup.live!.pollsFailed, 0);
  const temps = delivered.filter((s) => s.metricId === "cpu_temp");
  assert.equal(temps.length, byGroup.live!.pollsOk);
  assert.ok(temps.every((s) => s.value === 45 && s.deviceId === "node-1"));
  // After the poll at start, every poll falls on the 500 ms grid.
  const onGrid = temps.slice(1);
  const gaps = onGrid.slice(1).map((s, i) => s.timestampMs - onGrid[i]!.timestampMs);
  assert.ok(gaps.every((g) => g > 400 && g < 600), `intervals between live polls: ${gaps}`);
});

Deno.test("ipmi source kills ipmi-sensors at once when the poll's signal aborts", async () => {
  const dead = await freeUdpPort();
  const entries = [sensorEntry(dead, 2)];
  const source = ipmi.create(entries, { options: config, timeoutMs: 10_000 });
  try {
    const started = performance.now();
    const poll = source.poll(entries, AbortSignal.timeout(300));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(children("ipmi-sensors").length, 1);
    await assert.rejects(poll);
    assert.ok(performance.now() - started < 2000);
    assert.deepEqual(children("ipmi-sensors"), []);
  } finally {
    await source.close();
  }
});

Deno.test("ipmi source keeps the password out of ps and out of its errors", async () => {
  const sim = await startIpmiSim({ username: USER, password: PASSWORD });
  const dead = await freeUdpPort();
  const wrong = "Wr0ng#pass";
  try {
    // A poll that runs for its whole timeout, to look at the process list meanwhile.
    const slow = [sensorEntry(dead, 2)];
    const source = ipmi.create(slow, { options: config, timeoutMs: 1500 });
    try {
      const poll = source.poll(slow, AbortSignal.timeout(5000));
      poll.catch(() => {});
      await new Promise((r) => setTimeout(r, 500));
      const ps = await psOutput();
      assert.match(ps, new RegExp(`ipmi-sensors -h 127\\.0\\.0\\.1:${dead} --config-file=`));
      assert.ok(!ps.includes(PASSWORD) && !ps.includes("s3cr"), "password visible in ps");
      const err = await poll.then(() => undefined, (e: Error) => e);
      assert.ok(err);
      assert.match(err.message, /got no answer within 1500 ms and was killed/);
      assert.ok(!err.message.includes(PASSWORD));
    } finally {
      await source.close();
    }
    const badEntries = [entryFor(bmcUrl(sim.port, 2, wrong))];
    const bad = ipmi.create(badEntries, { options: config, timeoutMs: 5000 });
    try {
      const err = await bad.poll(badEntries, AbortSignal.timeout(5000)).then(() => undefined, (e: Error) => e);
      assert.ok(err);
      assert.match(err.message, /ipmi-sensors for admin@127\.0\.0\.1:\d+ failed \(exit 1\): .*password invalid/);
      assert.ok(!err.message.includes(wrong));
    } finally {
      await bad.close();
    }
    for (const e of [...badEntries, sensorEntry(sim.port, 2)]) {
      assert.ok(!ipmi.endpoint(e).includes(wrong) && !ipmi.endpoint(e).includes(PASSWORD));
    }
  } finally {
    await sim.stop();
  }
});

Deno.test("ipmi source gives ipmi-sensors a minimal environment, never the collector's secrets", async () => {
  const dead = await freeUdpPort();
  Deno.env.set("KWOLLECT_DB_PASSWORD", "db-secret-in-env");
  const slow = [sensorEntry(dead, 2)];
  const source = ipmi.create(slow, { options: config, timeoutMs: 1500 });
  try {
    const poll = source.poll(slow, AbortSignal.timeout(5000));
    poll.catch(() => {});
    let env: string[] = [];
    for (let tries = 0; env.length === 0 && tries < 100; tries++) {
      await new Promise((r) => setTimeout(r, 20));
      const child = children("ipmi-sensors").find((c) => c.state !== "Z");
      if (!child) continue;
      try {
        env = Deno.readTextFileSync(`/proc/${child.pid}/environ`).split("\0").filter((v) => v !== "");
      } catch { /* exited meanwhile */ }
    }
    assert.ok(env.length > 0, "ipmi-sensors was never seen running");
    assert.deepEqual(env.map((v) => v.split("=")[0]).sort(), ["LANG", "LC_ALL", "PATH"]);
    assert.ok(!env.join("\n").includes("db-secret-in-env"));
    await poll.then(() => undefined, () => undefined);
  } finally {
    Deno.env.delete("KWOLLECT_DB_PASSWORD");
    await source.close();
  }
});

Deno.test("ipmisensor urls are validated before any network access", () => {
  const cases: [string, RegExp][] = [
    ["ipmisensor://u:p@bmc.example.org/2", /^$/],
    ["ipmisensor://u:p@bmc:6230/CPU%20Temp?privilege_level=ADMIN&workaround_flags=authcap,opensesspriv", /^$/],
    ["ipmisensor://bmc/2", /^$/],
    ["ipmisensor://u:p@bmc/", /Missing sensor record ID or name/],
    ["ipmisensor://u:p@bmc/2?privilege_level=root", /Invalid privilege_level 'root'/],
    ["ipmisensor://u:p@bmc/2?workaround_flags=opensesspriv,fast", /Unknown freeipmi workaround flag 'fast'/],
    ["ipmisensor://u:p@bmc/2?driver=LAN", /Unknown query parameter 'driver'/],
    ["ipmisensor://u:p@node-[1-4]/2", /Invalid BMC host 'node-\[1-4\]'/],
    ["ipmisensor://u:p@bmc1,bmc2/2", /Invalid BMC host 'bmc1,bmc2'/],
    ["ipmisensor://u:123456789012345678901@bmc/2", /password .* is 21 bytes long; IPMI allows 20/],
    ["ipmisensor://a23456789012345678:p@bmc/2", /user name .* is 18 bytes long; IPMI allows 16/],
    ["ipmisensor://u:p%0Aq@bmc/2", /password .* contains a control character/],
    ["ipmisensor://u:%23secret%23@bmc/2?workaround_flags=x", /'ipmisensor:\/\/u:\*\*\*@bmc\/2\?workaround_flags=x'/],
  ];
  for (const [url, re] of cases) {
    const message = ipmi.validate(entryFor(url), config) ?? "";
    assert.match(message, re, url);
    assert.ok(!/123456789012345678901|secret/.test(message), `a password in a validation message: ${message}`);
  }
  const key = (url: string) => ipmi.groupKey(entryFor(url));
  assert.equal(key("ipmisensor://u:p@bmc/2"), key("ipmisensor://u:p@bmc:623/3"));
  assert.notEqual(key("ipmisensor://u:p@bmc/2"), key("ipmisensor://u:q@bmc/2"));
  assert.notEqual(key("ipmisensor://u:p@bmc/2"), key("ipmisensor://u:p@bmc/2?privilege_level=admin"));
  assert.equal(ipmi.endpoint(entryFor("ipmisensor://u:p@bmc/2")), "u@bmc:623");
});

Deno.test("ipmi-sensors lines are split with commas in names and events", () => {
  const { rows, malformed } = parseSensorOutput(
    [
      "2,CPU Temp,Temperature,45.00,C,'OK'",
      "5,Inlet, Front,Temperature,-3.50,C,'At or Below (<=) Lower Critical Threshold'",
      "9,PSU2 Status,Power Supply,N/A,N/A,'Presence detected' 'Power Supply input lost (AC/DC)'",
      "11,Drive 0,Drive Slot,N/A,N/A,N/A",
      "garbage line",
      "",
    ].join("\n"),
  );
  assert.deepEqual(rows.map((r) => [r.recordId, r.name, r.type, r.reading, r.units]), [
    ["2", "CPU Temp", "Temperature", 45, "C"],
    ["5", "Inlet, Front", "Temperature", -3.5, "C"],
    ["9", "PSU2 Status", "Power Supply", undefined, "N/A"],
    ["11", "Drive 0", "Drive Slot", undefined, "N/A"],
  ]);
  assert.deepEqual(malformed, ["garbage line"]);
});
