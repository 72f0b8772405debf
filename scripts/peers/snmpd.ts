/**
 * A throwaway Net-SNMP agent (Debian's snmpd) for tests, on 127.0.0.1 at a free UDP port, with
 * its configuration, persistent directory and log in a temp directory (`-C`: the system's
 * snmpd.conf is ignored). It serves:
 *
 * - community `public` for v1 and v2c, and the SNMPv3 users of `V3_USERS`;
 * - the standard MIB-2 objects (system group, sysORTable...);
 * - under `OIDS.base` (`override` lines): numeric text, plain text, and `OIDS.seriesCount`
 *   integers `OIDS.series(n)` = n;
 * - under `OIDS.pass` (a `pass` script): a Counter64 and a Gauge32 whose values the test sets
 *   with `setCounter64()` and `setGauge()`, plus Latin-1 and binary OctetStrings. snmpd reuses
 *   the output of a pass command run just before with the same arguments, so a test that changes
 *   a value reads it together with another pass OID;
 * - `OIDS.slow` (a `pass_persist` script, which snmpd never caches), answered 1.5 s after it is
 *   asked (a slow PDU; snmpd answers nothing else meanwhile), whose value is the time the
 *   request reached the agent, in epoch milliseconds.
 */
import dgram from "node:dgram";

export const OIDS = {
  base: "1.3.6.1.4.1.99999",
  numericText: "1.3.6.1.4.1.99999.3.0",
  plainText: "1.3.6.1.4.1.99999.4.0",
  seriesCount: 200,
  series: (n: number) => `1.3.6.1.4.1.99999.10.${n}`,
  pass: "1.3.6.1.4.1.99998",
  counter64: "1.3.6.1.4.1.99998.1.0",
  gauge: "1.3.6.1.4.1.99998.2.0",
  /** "été" in Latin-1: not valid UTF-8. */
  latin1: "1.3.6.1.4.1.99998.3.0",
  /** 00 01 02 ff: binary, no text. */
  binary: "1.3.6.1.4.1.99998.4.0",
  /** Answered after 1.5 s; the value is when the request arrived (epoch ms, as text). */
  slow: "1.3.6.1.4.1.99997.1.0",
  sysName: "1.3.6.1.2.1.1.5.0",
  sysUpTime: "1.3.6.1.2.1.1.3.0",
  missing: "1.3.6.1.4.1.99999.77.0",
} as const;

export const SYS_NAME = "kwollector-test-agent";
export const NUMERIC_TEXT = "12.5";
export const PLAIN_TEXT = "hello world";

/** SNMPv3 users of the agent: name, its `createUser` arguments and its access level. */
export const V3_USERS = {
  shaAes: { name: "kwsha", auth: "sha", authPass: "auth-pass-1", priv: "aes", privPass: "priv-pass-1" },
  md5Des: { name: "kwmd5", auth: "md5", authPass: "auth-pass-2", priv: "des", privPass: "priv-pass-2" },
  authOnly: { name: "kwauth", auth: "sha", authPass: "auth-pass-3" },
  noAuth: { name: "kwnone" },
} as const;

export interface Snmpd {
  port: number;
  pid: number;
  dir: string;
  setCounter64(value: bigint): Promise<void>;
  setGauge(value: number): Promise<void>;
  stop(): Promise<void>;
}

/** A UDP port nobody listens on at the moment. */
export async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/**
 * The UDP ports sockets are bound to, read from /proc/net/udp (probing with a bind of our own
 * could make a starting peer's bind fail).
 */
export async function boundUdpPorts(): Promise<Set<number>> {
  const table = await Deno.readTextFile("/proc/net/udp");
  const ports = new Set<number>();
  for (const line of table.split("\n").slice(1)) {
    const local = line.trim().split(/\s+/)[1];
    if (local) ports.add(parseInt(local.slice(local.indexOf(":") + 1), 16));
  }
  return ports;
}

/** Waits until a peer holds `port`; fails with its log when it does not within 10 s. */
export async function waitForUdpPort(port: number, what: string, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await boundUdpPorts()).has(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on udp 127.0.0.1:${port} within 10 s: ${log()}`);
}

/** Reads a peer's log file for an error message; "(no log)" when it does not exist yet. */
export function tail(path: string): () => string {
  return () => {
    try {
      return Deno.readTextFileSync(path).slice(-2000);
    } catch {
      return "(no log)";
    }
  };
}

/**
 * Starts a UDP daemon that the test owns, waits until it holds `port`, and returns how to stop
 * it (by its PID) and remove its directory. A daemon that never listens is stopped at once.
 */
export async function startUdpDaemon(opts: {
  command: string;
  args: string[];
  env?: Record<string, string>;
  port: number;
  dir: string;
  log: () => string;
}): Promise<{ pid: number; stop(): Promise<void> }> {
  const child = new Deno.Command(opts.command, {
    args: opts.args,
    env: opts.env ?? {},
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await child.status;
    await Deno.remove(opts.dir, { recursive: true });
  };
  try {
    await waitForUdpPort(opts.port, opts.command, opts.log);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid, stop };
}

function passScript(vals: string): string {
  const b = `.${OIDS.pass}`;
  return `#!/bin/sh
B=${b}; V=${vals}
get() {
  case "$1" in
    $B.1.0) printf '%s\\ncounter64\\n%s\\n' "$1" "$(cat $V/c64)";;
    $B.2.0) printf '%s\\ngauge\\n%s\\n' "$1" "$(cat $V/gauge)";;
    $B.3.0) printf '%s\\noctet\\ne9 74 e9\\n' "$1";;
    $B.4.0) printf '%s\\noctet\\n00 01 02 ff\\n' "$1";;
  esac
}
case "$1" in
  -g) get "$2";;
  -n) case "$2" in
        $B|$B.0|$B.1) get $B.1.0;;
        $B.1.0|$B.2) get $B.2.0;;
        $B.2.0|$B.3) get $B.3.0;;
        $B.3.0|$B.4) get $B.4.0;;
      esac;;
esac
exit 0
`;
}

/** The `pass_persist` protocol of snmpd: PING/PONG, then "get" or "getnext" and an OID per request. */
function slowScript(): string {
  const oid = `.${OIDS.slow}`;
  return `#!/bin/sh
while read cmd; do
  case "$cmd" in
    PING) echo PONG;;
    get) read oid
      if [ "$oid" = "${oid}" ]; then t=$(date +%s%3N); sleep 1.5; printf '%s\\nstring\\n%s\\n' "$oid" "$t"
      else echo NONE; fi;;
    getnext) read oid; echo NONE;;
    set) read oid; read value; echo not-writable;;
    *) echo NONE;;
  esac
done
`;
}

function config(port: number, dir: string): string {
  const lines = [
    `agentAddress udp:127.0.0.1:${port}`,
    "rocommunity public 127.0.0.1",
    `sysName ${SYS_NAME}`,
    "dontLogTCPWrappersConnects yes",
    `override .${OIDS.numericText} octet_str "${NUMERIC_TEXT}"`,
    `override .${OIDS.plainText} octet_str "${PLAIN_TEXT}"`,
    ...Array.from({ length: OIDS.seriesCount }, (_, i) => `override .${OIDS.series(i + 1)} integer ${i + 1}`),
    `pass .${OIDS.pass} /bin/sh ${dir}/pass.sh`,
    `pass_persist .1.3.6.1.4.1.99997 /bin/sh ${dir}/slow.sh`,
  ];
  const u = V3_USERS;
  lines.push(
    `createUser ${u.shaAes.name} SHA ${u.shaAes.authPass} AES ${u.shaAes.privPass}`,
    `rouser ${u.shaAes.name} priv`,
    `createUser ${u.md5Des.name} MD5 ${u.md5Des.authPass} DES ${u.md5Des.privPass}`,
    `rouser ${u.md5Des.name} priv`,
    `createUser ${u.authOnly.name} SHA ${u.authOnly.authPass}`,
    `rouser ${u.authOnly.name} auth`,
    `createUser ${u.noAuth.name}`,
    `rouser ${u.noAuth.name} noauth`,
  );
  return lines.join("\n") + "\n";
}

/** Starts snmpd (installed by `apt-get install snmpd snmp`); a missing binary is an error. */
export async function startSnmpd(opts: { port?: number } = {}): Promise<Snmpd> {
  const port = opts.port ?? await freeUdpPort();
  const dir = await Deno.makeTempDir({ prefix: "kwollector-snmpd-" });
  await Deno.mkdir(`${dir}/persist`);
  await Deno.mkdir(`${dir}/vals`);
  await Deno.writeTextFile(`${dir}/vals/c64`, "18446744073709551610\n");
  await Deno.writeTextFile(`${dir}/vals/gauge`, "1234\n");
  await Deno.writeTextFile(`${dir}/pass.sh`, passScript(`${dir}/vals`));
  await Deno.writeTextFile(`${dir}/slow.sh`, slowScript());
  await Deno.writeTextFile(`${dir}/snmpd.conf`, config(port, dir));
  const { pid, stop } = await startUdpDaemon({
    command: "/usr/sbin/snmpd",
    args: ["-f", "-C", "-c", `${dir}/snmpd.conf`, "-Lf", `${dir}/snmpd.log`, "-M", "/nonexistent", "-m", ""],
    env: { SNMP_PERSISTENT_DIR: `${dir}/persist` },
    port,
    dir,
    log: tail(`${dir}/snmpd.log`),
  });
  return {
    port,
    pid,
    dir,
    setCounter64: (v) => Deno.writeTextFile(`${dir}/vals/c64`, `${v}\n`),
    setGauge: (v) => Deno.writeTextFile(`${dir}/vals/gauge`, `${v}\n`),
    stop,
  };
}

/** Runs Net-SNMP's snmpget with `args` (without the MIB options); returns its output. */
export async function snmpget(args: string[]): Promise<string> {
  const out = await new Deno.Command("snmpget", {
    args: ["-M", "/nonexistent", "-m", "", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`snmpget ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}
