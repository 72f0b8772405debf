import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { CONFIG_KEYS, DEFAULTS } from "../src/config/defaults.ts";
import { resolveConfig } from "../src/config/resolve.ts";
import { configTemplate, initCommand } from "../src/cli/init.ts";
import { UsageError } from "../src/config/errors.ts";
import { configReference } from "../scripts/gen-config-reference.ts";
import { GLIBC_TUNABLES, PERMISSIONS, RUNTIME_FLAGS } from "../scripts/compile.ts";
import { destroyPostgres, startPostgres } from "../scripts/peers/postgres.ts";
import { startCountingExporter } from "../scripts/peers/prometheus_exporter.ts";
import { startIpmiSim } from "../scripts/peers/ipmi_sim.ts";
import { startFakeBmc } from "../scripts/peers/redfish_server.ts";
import { ServedLog } from "../scripts/demo/served.ts";
import { PDU_OIDS, startSnmpPdu } from "../scripts/demo/snmp_pdu.ts";
import { startModbusMeter } from "../scripts/demo/modbus_meter.ts";
import { tempDir } from "../scripts/harness/temp_dir.ts";

/**
 * What ships: install.sh, the systemd units, the generated default config and reference, and
 * the program itself run the way the compiled binary runs (least permissions, no source tree).
 */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN_TS = `${ROOT}main.ts`;
const text = new TextDecoder();

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped", ...opts }).output();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Every entry under `root`: path, kind, mode, owner, and content checksum or link target. */
async function listing(root: string, dir = ""): Promise<string[]> {
  const lines: string[] = [];
  const entries = [...Deno.readDirSync(`${root}${dir}`)].sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    const path = `${dir}/${e.name}`;
    const info = Deno.lstatSync(`${root}${path}`);
    const mode = ((info.mode ?? 0) & 0o7777).toString(8);
    const owner = `${info.uid}:${info.gid}`;
    if (info.isSymlink) lines.push(`${path} l ${mode} ${owner} -> ${Deno.readLinkSync(`${root}${path}`)}`);
    else if (info.isDirectory) lines.push(`${path} d ${mode} ${owner}`, ...await listing(root, path));
    else {
      const digest = await crypto.subtle.digest("SHA-256", Deno.readFileSync(`${root}${path}`));
      const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
      lines.push(`${path} f ${mode} ${owner} ${info.size} ${hex}`);
    }
  }
  return lines;
}

/** A stand-in for the compiled binary: install.sh only copies it. */
async function fakeBinary(dir: string): Promise<string> {
  const path = `${dir}/kwollector-x86_64-unknown-linux-gnu`;
  await Deno.writeTextFile(path, "#!/bin/sh\necho 0.0.0-test\n");
  await Deno.chmod(path, 0o755);
  return path;
}

async function install(destdir: string, binary: string): Promise<void> {
  const out = await run("sh", [`${ROOT}scripts/install.sh`, binary], { env: { DESTDIR: destdir } });
  assert.equal(out.code, 0, `install.sh failed:\n${out.stdout}${out.stderr}`);
}

Deno.test("install.sh run twice into a scratch DESTDIR gives the same tree", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-install-" });
  try {
    const binary = await fakeBinary(dir);
    const destdir = `${dir}/root`;
    await install(destdir, binary);
    const first = await listing(destdir);
    await install(destdir, binary);
    assert.deepEqual(await listing(destdir), first);

    const modes = Object.fromEntries(first.map((l) => l.split(" ")).map(([path, , mode]) => [path, mode]));
    assert.equal(modes["/usr/local/bin/kwollector"], "755");
    assert.equal(modes["/etc/kwollect/kwollector.yaml"], "640");
    assert.equal(modes["/var/lib/kwollect"], "700");
    assert.equal(modes["/etc/systemd/system/kwollector.service"], "644");
    assert.equal(modes["/etc/systemd/system/kwollector-wattmetre@.service"], "644");
    assert.deepEqual([...Deno.readDirSync(`${destdir}/etc/kwollect/metrics.d`)], []);
    assert.equal(await Deno.readTextFile(`${destdir}/etc/kwollect/kwollector.yaml`), configTemplate());
    assert.match(
      await Deno.readTextFile(`${destdir}/usr/local/lib/sysusers.d/kwollector.conf`),
      /^u kwollector - ".*" \/var\/lib\/kwollect /,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("install.sh keeps an edited configuration and refuses a missing binary", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-install-" });
  try {
    const binary = await fakeBinary(dir);
    const destdir = `${dir}/root`;
    await install(destdir, binary);
    await Deno.writeTextFile(`${destdir}/etc/kwollect/kwollector.yaml`, "db_host: central.example.org\n");
    await install(destdir, binary);
    assert.equal(await Deno.readTextFile(`${destdir}/etc/kwollect/kwollector.yaml`), "db_host: central.example.org\n");

    const missing = await run("sh", [`${ROOT}scripts/install.sh`, `${dir}/nothing-here`], {
      env: { DESTDIR: destdir },
    });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no executable kwollector binary at '.*nothing-here'/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * systemd-analyze verify checks that every ExecStart binary exists and is executable. It runs
 * with --root on the tree install.sh produced (so the binary is there as installed), plus the
 * host's own units (sysinit.target, ...) and the other programs the units start, copied in.
 * Warnings (an unknown key, a bad value) are printed while the exit code stays 0, so the output
 * must be empty too.
 */
Deno.test("the systemd units pass systemd-analyze verify", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-units-" });
  try {
    const root = `${dir}/root`;
    await install(root, await fakeBinary(dir));
    await Deno.mkdir(`${root}/usr/lib/systemd`, { recursive: true });
    const copy = await run("cp", ["-r", "/usr/lib/systemd/system", `${root}/usr/lib/systemd/`]);
    assert.equal(copy.code, 0, copy.stderr);
    for (const program of ["/bin/sh", "/bin/kill", "/usr/bin/psql"]) {
      await Deno.mkdir(`${root}${program.replace(/\/[^/]+$/, "")}`, { recursive: true });
      await Deno.copyFile(program, `${root}${program}`);
      await Deno.chmod(`${root}${program}`, 0o755);
    }
    // Units that install.sh does not install on a rack host (they run on the database host).
    for (const unit of ["kwollect-summary-refresh.service", "kwollect-summary-refresh.timer"]) {
      await Deno.copyFile(`${ROOT}config/${unit}`, `${root}/etc/systemd/system/${unit}`);
    }
    const verify = await run("systemd-analyze", [
      "verify",
      `--root=${root}`,
      "kwollector.service",
      "kwollector-wattmetre@ttyUSB0.service",
      "kwollect-summary-refresh.service",
      "kwollect-summary-refresh.timer",
    ]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.equal((verify.stdout + verify.stderr).trim(), "");

    // The check is real: a unit whose binary is missing fails.
    await Deno.remove(`${root}/usr/local/bin/kwollector`);
    const broken = await run("systemd-analyze", ["verify", `--root=${root}`, "kwollector.service"]);
    assert.notEqual(broken.code, 0);
    assert.match(broken.stderr, /\/usr\/local\/bin\/kwollector is not executable/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * glibc ignores a tunable it does not know without a word, so each one is read back from the
 * dynamic loader (`ld.so --list-tunables`, glibc 2.33 and later) with the value set.
 */
Deno.test("the systemd units and the kwollector task tune glibc's malloc as the benchmarks run it", async () => {
  const line = `Environment=GLIBC_TUNABLES=${GLIBC_TUNABLES}`;
  for (const unit of ["kwollector.service", "kwollector-wattmetre@.service"]) {
    const lines = Deno.readTextFileSync(`${ROOT}config/${unit}`).split("\n");
    assert.ok(lines.includes(line), `config/${unit} lacks '${line}'`);
  }
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks;
  assert.ok(tasks.kwollector.startsWith(`GLIBC_TUNABLES=${GLIBC_TUNABLES} deno run `), tasks.kwollector);

  const listed = await run("/lib64/ld-linux-x86-64.so.2", ["--list-tunables"], { env: { GLIBC_TUNABLES } });
  assert.equal(listed.code, 0, listed.stderr);
  for (const tunable of GLIBC_TUNABLES.split(":")) {
    const [name, value] = tunable.split("=");
    const hex = `0x${Number(value).toString(16)}`;
    assert.match(
      listed.stdout,
      new RegExp(`^${name!.replaceAll(".", "\\.")}: ${hex} `, "m"),
      `glibc ignores '${tunable}'`,
    );
  }
});

Deno.test("the kwollector task runs with the runtime flags the compiled binary embeds", () => {
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks;
  for (const flag of RUNTIME_FLAGS) {
    assert.ok(tasks.kwollector.includes(` ${flag} `), `the kwollector task lacks '${flag}': ${tasks.kwollector}`);
  }
});

Deno.test("config/kwollector.yaml is what kwollector init writes, and lists every key with its default", async () => {
  assert.equal(await Deno.readTextFile(`${ROOT}config/kwollector.yaml`), configTemplate());
  const uncommented = configTemplate().replace(/^#(\w+:)/gm, "$1");
  const values = parse(uncommented) as Record<string, unknown>;
  assert.deepEqual(Object.keys(values).sort(), [...CONFIG_KEYS].sort());
  for (const key of CONFIG_KEYS) assert.equal(values[key], DEFAULTS[key].default, key);
  // Uncommented, the file is a valid configuration equal to the defaults.
  const dir = await tempDir("kwollector-test-");
  try {
    await Deno.writeTextFile(`${dir}/all.yaml`, uncommented);
    const fromFile = resolveConfig({ file: `${dir}/all.yaml`, env: {} }).config;
    assert.deepEqual(fromFile, resolveConfig({ env: {} }).config);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kwollector init writes a new file and refuses to overwrite one without --force", async () => {
  const dir = await tempDir("kwollector-test-");
  const printed: string[] = [];
  const log = console.log;
  console.log = (line: string) => printed.push(line);
  try {
    const path = `${dir}/kwollector.yaml`;
    assert.equal(initCommand([path]), 0);
    assert.equal(await Deno.readTextFile(path), configTemplate());
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
    await Deno.writeTextFile(path, "db_host: kept\n");
    assert.throws(() => initCommand([path]), (err: Error) => {
      assert.ok(err instanceof UsageError);
      assert.match(
        err.message,
        /^Configuration file '.*kwollector\.yaml' already exists: not overwritten \(use --force/,
      );
      return true;
    });
    assert.equal(await Deno.readTextFile(path), "db_host: kept\n");
    assert.equal(initCommand([path, "--force"]), 0);
    assert.equal(await Deno.readTextFile(path), configTemplate());
    printed.length = 0;
    assert.equal(initCommand([]), 0);
    assert.equal(printed.join("\n") + "\n", configTemplate());
    assert.throws(() => initCommand(["a.yaml", "b.yaml"]), UsageError);
    assert.throws(() => initCommand(["--overwrite"]), UsageError);
  } finally {
    console.log = log;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("README's configuration reference is the one generated from the defaults table", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  assert.ok(
    readme.includes(configReference()),
    "README.md is out of date: paste the output of 'deno run scripts/gen-config-reference.ts' over its reference",
  );
});

/**
 * The program as the compiled binary runs it: the compile task's permissions and V8 heap, with read and
 * write narrowed to a directory that holds only its config, metrics.d and spool (and IPMI's
 * private temp files, through TMPDIR), started from that directory, polling one device of each
 * protocol. Reading anything else (sql/, the config templates, the source tree) would fail with
 * NotCapable. Deno loads the program's own modules without read permission, as the compiled
 * binary loads its embedded ones.
 */
Deno.test("the program runs, spools and forwards from another directory with the compile task's permissions", async () => {
  const pg = await startPostgres();
  const served = new ServedLog();
  const exporter = startCountingExporter();
  const pdu = await startSnmpPdu("pdu-1", () => "outlet_power_w", served);
  const meter = await startModbusMeter("meter-1", served);
  const bmc = await startIpmiSim({ username: "admin", password: "ipmi-pw" });
  const redfish = await startFakeBmc({ tls: true, user: "monitor", password: "redfish-pw" });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-norepo-" });
  let collector: Deno.ChildProcess | undefined;
  try {
    await Deno.mkdir(`${dir}/metrics.d`);
    await Deno.copyFile(redfish.certFile, `${dir}/bmc.pem`);
    const entries: [string, string, string][] = [
      ["node-1", "exporter", `prometheus://127.0.0.1:${exporter.port}/scrape_count`],
      ["pdu-1", "outlet_power_w", `snmp://public@127.0.0.1:${pdu.port}/${PDU_OIDS.outletPower(1)}`],
      ["meter-1", "meter_power_w", `modbus://127.0.0.1:${meter.port}/1/2/be_be_f32`],
      ["bmc-1", "cpu_temp", `ipmisensor://admin:ipmi-pw@127.0.0.1:${bmc.port}/2?workaround_flags=opensesspriv`],
      [
        "redfish-1",
        "inlet_temp",
        `https://monitor:redfish-pw@127.0.0.1:${redfish.port}/redfish/v1/Chassis/1/Thermal#Temperatures[0].ReadingCelsius`,
      ],
    ];
    await Deno.writeTextFile(
      `${dir}/metrics.d/rack.yaml`,
      entries.map(([device, name, url]) =>
        `- name: ${name}\n  device_id: ${device}\n  url: ${url}\n  update_every: 500\n`
      )
        .join(""),
    );
    await Deno.writeTextFile(
      `${dir}/kwollector.yaml`,
      [
        "metrics_dir: metrics.d",
        "spool_path: spool.db",
        "db_host: 127.0.0.1",
        `db_port: ${pg.port}`,
        "db_password: s3cret-pw",
        "db_sslmode: require",
        "db_admin: postgres",
        "forward_interval_ms: 100",
        "redfish_tls_verify: ca",
        "redfish_ca_file: bmc.pem",
        "",
      ].join("\n"),
    );
    const flags = [...RUNTIME_FLAGS, ...PERMISSIONS].map((f) =>
      f === "--allow-read" ? `--allow-read=${dir}` : f === "--allow-write" ? `--allow-write=${dir}` : f
    );
    assert.ok(flags.some((f) => f.startsWith("--allow-read=")) && flags.some((f) => f.startsWith("--allow-write=")));
    const env = { TMPDIR: dir, GLIBC_TUNABLES };
    const kwollector = (args: string[]) => run(Deno.execPath(), ["run", ...flags, MAIN_TS, ...args], { cwd: dir, env });

    const setup = await kwollector(["setup-db", "kwollector.yaml"]);
    assert.equal(setup.code, 0, setup.stderr);
    assert.match(setup.stdout, /Schema ready/);

    collector = new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, MAIN_TS, "run", "kwollector.yaml"],
      cwd: dir,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const admin = pg.admin("kwdb");
    const devices = entries.map(([device]) => device).sort();
    const deadline = Date.now() + 30_000;
    for (;;) {
      const seen = await admin<{ device_id: string }[]>`SELECT DISTINCT device_id FROM metrics ORDER BY device_id`;
      if (seen.length === devices.length) break;
      assert.ok(Date.now() < deadline, `only ${seen.map((r) => r.device_id)} reached the central database in 30 s`);
      await new Promise((r) => setTimeout(r, 250));
    }
    // status reads the device table the collector writes every second.
    for (;;) {
      const status = await kwollector(["status", "kwollector.yaml", "--json"]);
      assert.equal(status.code, 0, status.stderr);
      const shown = JSON.parse(status.stdout).devices.map((d: { device_id: string }) => d.device_id).sort();
      if (shown.length === devices.length) {
        assert.deepEqual(shown, devices);
        break;
      }
      assert.ok(Date.now() < deadline, `status shows only ${shown}`);
    }

    collector.kill("SIGTERM");
    const stopped = await collector.output();
    collector = undefined;
    const log = text.decode(stopped.stderr);
    assert.equal(stopped.code, 0, log);
    assert.doesNotMatch(log, /NotCapable|Requires .* access|failing/);
    const flush = await kwollector(["flush", "kwollector.yaml"]);
    assert.equal(flush.code, 0, flush.stderr);

    const counts = await admin<{ value: number }[]>`
      SELECT value FROM metrics WHERE device_id = 'node-1' AND metric_id = 'prom_scrape_count' ORDER BY value`;
    assert.deepEqual(counts.map((r) => r.value), Array.from({ length: exporter.served() }, (_, i) => i + 1));
    const edges = await admin<{ edge_id: string }[]>`SELECT DISTINCT edge_id FROM kwollect_ledger`;
    assert.deepEqual(edges.map((r) => r.edge_id), [Deno.hostname()], "edge_id defaults to the host name");
    const [temp] = await admin<{ value: number }[]>`SELECT max(value) AS value FROM metrics WHERE device_id = 'bmc-1'`;
    assert.equal(temp?.value, 45);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => !n.startsWith("spool.db")).sort(),
      ["bmc.pem", "kwollector.yaml", "metrics.d"],
      "IPMI's temp files are removed at stop",
    );
  } finally {
    if (collector) {
      collector.kill("SIGKILL");
      await collector.output();
    }
    await Promise.allSettled([exporter.close(), pdu.close(), meter.close(), bmc.stop(), redfish.close()]);
    await destroyPostgres(pg);
    await Deno.remove(dir, { recursive: true });
  }
});
