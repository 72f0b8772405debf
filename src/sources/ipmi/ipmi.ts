import type { MetricEntry } from "../../config/metrics_dir.ts";
import { redactUrl } from "../../config/metric_url.ts";
import { redact, registerSecret } from "../../log.ts";
import { parseSensorOutput, type SensorRow } from "./sensors_csv.ts";
import type { EntryError, PollResult, Protocol, Reading, Source, SourceContext } from "../source.ts";

/**
 * IPMI sensors of a BMC over the LAN, read with freeipmi's `ipmi-sensors` as Kwollect did:
 *
 *   ipmisensor://user:password@host[:port]/<sensor>[?privilege_level=operator&workaround_flags=opensesspriv]
 *
 * - `sensor`: the SDR record ID (the first column of `ipmi-sensors`, what Grid'5000 uses) or the
 *   sensor name. A name must be unique on the BMC; a record ID is always safe.
 * - `port`: 623 by default. It is always passed (`-h host:port`): without a port freeipmi treats
 *   a local host name as in-band and never goes to the network.
 * - `privilege_level`: `user` (freeipmi's default, enough to read sensors), `operator` or `admin`.
 * - `workaround_flags`: freeipmi's `-W` flags for non-compliant BMCs, comma-separated (e.g.
 *   `opensesspriv` for OpenIPMI's ipmi_sim, `authcap` for some Asus/Intel boards).
 *
 * One `ipmi-sensors` child per group (one BMC and set of credentials) and poll, IPMI 2.0
 * (`driver-type LAN_2_0`) with Kwollect's `-b` (bridge to sensors not owned by the BMC). When
 * every entry names a record ID, only those records are read (`--record-ids`), so a poll costs
 * a few IPMI requests instead of one per sensor of the BMC; a record ID the BMC does not have
 * makes freeipmi refuse the whole list, so the poll falls back to reading every sensor, and keeps
 * doing so while that ID is missing.
 *
 * Secrets and files: the user name and password never appear on the command line (visible in
 * `ps`). Each source writes them to a freeipmi configuration file (mode 0600) in a private
 * directory (mode 0700, `kwollector-ipmi-*` under the temp dir), next to the BMC's SDR cache
 * directory; close() removes it all. The password is registered for log redaction.
 *
 * SDR cache: kept across polls, so a poll reads sensors only. `--sdr-cache-recreate` is passed on
 * every poll because freeipmi honours it only when the cache is out of date or invalid (checked
 * with freeipmi-tools 1.6.10: a valid cache file is left untouched, a BMC whose SDR changed gets
 * its cache rebuilt in the same run); without it, such a poll would fail with "SDR Cache ... out of
 * date: Please flush the cache" and need a second child.
 *
 * Time limit: the child is killed (SIGKILL) as soon as the poll's signal aborts (the scheduler
 * aborts it after `ctx.timeoutMs`), and in any case KILL_GRACE_MS after `ctx.timeoutMs`: that
 * second limit covers callers without a deadline, and comes a little later so that the caller's
 * own timeout message is the one reported every time (two timers racing would make the error,
 * and so the log, alternate between two texts). The child is always waited for, so no zombie is
 * left behind. A BMC that never answers fails the poll at the timeout; other BMCs, having their
 * own groups and children, are not delayed.
 *
 * Per entry: an unknown sensor, an ambiguous name or an `N/A` reading is an EntryError for that
 * entry only. N/A is common (a powered-off node, an absent PSU); reporting it as an entry error
 * makes the scheduler count it and log it once when it starts and once when it ends, and `status`
 * shows why the metric has no data, instead of samples silently missing. A non-zero exit of
 * ipmi-sensors (wrong password, no answer, ...) fails the poll with its first message line.
 */

const COMMAND = "ipmi-sensors";
/** Everything a child process gets from our environment: a search path and the C locale. */
const CHILD_ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C", LC_ALL: "C" };
const DEFAULT_PORT = 623;
const KILL_GRACE_MS = 50;
/** IPMI 2.0 limits (freeipmi refuses longer values). */
const MAX_USERNAME_BYTES = 16;
const MAX_PASSWORD_BYTES = 20;
const PRIVILEGE_LEVELS = ["user", "operator", "admin"] as const;
/** freeipmi's workaround flags (ipmi-sensors(8), WORKAROUNDS). */
const WORKAROUND_FLAGS = new Set([
  "assumeio",
  "spinpoll",
  "authcap",
  "nochecksumcheck",
  "idzero",
  "unexpectedauth",
  "forcepermsg",
  "endianseq",
  "noauthcodecheck",
  "intel20",
  "supermicro20",
  "sun20",
  "opensesspriv",
  "integritycheckvalue",
  "assumemaxsdrrecordcount",
  "discretereading",
  "ignorescanningdisabled",
  "assumebmcowner",
  "ignoreauthcode",
]);

interface BmcTarget {
  host: string;
  port: number;
  username: string;
  password: string;
  privilegeLevel: typeof PRIVILEGE_LEVELS[number];
  workaroundFlags: string[];
}

function parseTarget(entry: MetricEntry): BmcTarget | { error: string } {
  const t = entry.target;
  const where = `url '${redactUrl(entry.url)}'`;
  // A host list or range (`node-[1-4]`, `a,b`) would make freeipmi poll several hosts.
  if (!/^[a-z0-9._-]+$/i.test(t.host) && !/^[0-9a-f:.]+$/i.test(t.host)) {
    return { error: `Invalid BMC host '${t.host}' in ${where}` };
  }
  for (
    const [what, value, max] of [["user name", t.username, MAX_USERNAME_BYTES], [
      "password",
      t.password,
      MAX_PASSWORD_BYTES,
    ]] as const
  ) {
    // A newline would end the configuration file's line and let the value add options.
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f]/.test(value)) return { error: `The ${what} in ${where} contains a control character` };
    const bytes = new TextEncoder().encode(value).length;
    if (bytes > max) return { error: `The ${what} in ${where} is ${bytes} bytes long; IPMI allows ${max}` };
  }
  let privilegeLevel: BmcTarget["privilegeLevel"] = "user";
  let workaroundFlags: string[] = [];
  for (const [key, value] of t.query) {
    if (key === "privilege_level") {
      const level = value.toLowerCase();
      if (!(PRIVILEGE_LEVELS as readonly string[]).includes(level)) {
        return { error: `Invalid privilege_level '${value}' in ${where}: expected ${PRIVILEGE_LEVELS.join(", ")}` };
      }
      privilegeLevel = level as BmcTarget["privilegeLevel"];
    } else if (key === "workaround_flags") {
      workaroundFlags = value.split(",").map((f) => f.trim().toLowerCase()).filter((f) => f !== "");
      const unknown = workaroundFlags.find((f) => !WORKAROUND_FLAGS.has(f));
      if (unknown !== undefined) return { error: `Unknown freeipmi workaround flag '${unknown}' in ${where}` };
    } else {
      return { error: `Unknown query parameter '${key}' in ${where} (known: privilege_level, workaround_flags)` };
    }
  }
  return {
    host: t.host,
    port: t.port ?? DEFAULT_PORT,
    username: t.username,
    password: t.password,
    privilegeLevel,
    workaroundFlags,
  };
}

function hostPort(entry: MetricEntry): string {
  const host = entry.target.host.includes(":") ? `[${entry.target.host}]` : entry.target.host;
  return `${host}:${entry.target.port ?? DEFAULT_PORT}`;
}

export const ipmi: Protocol<never> = {
  configKeys: [],
  validate(entry) {
    registerSecret(entry.target.password);
    if (entry.target.path.trim() === "") {
      return `Missing sensor record ID or name in url '${redactUrl(entry.url)}'`;
    }
    if (entry.target.fragment) return `Unexpected fragment in url '${redactUrl(entry.url)}'`;
    const target = parseTarget(entry);
    return "error" in target ? target.error : undefined;
  },
  groupKey(entry) {
    const t = parseTarget(entry);
    if ("error" in t) throw new Error(t.error);
    const flags = [...t.workaroundFlags].sort();
    return JSON.stringify(["ipmisensor", t.host, t.port, t.username, t.password, t.privilegeLevel, flags]);
  },
  endpoint: (entry) => (entry.target.username ? `${entry.target.username}@` : "") + hostPort(entry),
  create: (entries, ctx) => new IpmiSource(entries, ctx),
};

/** The freeipmi configuration file: every value quoted, with `\`, `#` and `"` escaped. */
function freeipmiConfig(t: BmcTarget): string {
  const quote = (s: string) => `"${s.replace(/[\\#"]/g, (c) => `\\${c}`)}"`;
  const lines = ["driver-type LAN_2_0", `privilege-level ${t.privilegeLevel.toUpperCase()}`];
  if (t.username) lines.push(`username ${quote(t.username)}`);
  if (t.password) lines.push(`password ${quote(t.password)}`);
  if (t.workaroundFlags.length > 0) lines.push(`workaround-flags ${t.workaroundFlags.join(" ")}`);
  return lines.join("\n") + "\n";
}

interface PrivateDir {
  path: string;
  configFile: string;
  cacheDir: string;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

class IpmiSource implements Source {
  #target: BmcTarget;
  #endpoint: string;
  #hostArg: string;
  #timeoutMs: number;
  #dir: Promise<PrivateDir> | undefined;
  #children = new Set<Deno.ChildProcess>();
  /** Record IDs the BMC did not list on the last full read. */
  #missingIds = new Set<string>();
  #closed = false;

  constructor(entries: readonly MetricEntry[], ctx: SourceContext) {
    const first = entries[0]!;
    const target = parseTarget(first);
    if ("error" in target) throw new Error(target.error);
    registerSecret(target.password);
    this.#target = target;
    this.#endpoint = ipmi.endpoint(first);
    this.#hostArg = hostPort(first);
    this.#timeoutMs = ctx.timeoutMs;
  }

  async poll(entries: readonly MetricEntry[], signal: AbortSignal): Promise<PollResult> {
    if (this.#closed) throw new Error(`IPMI source ${this.#endpoint} is closed`);
    const deadline = performance.now() + this.#timeoutMs;
    const dir = await this.#privateDir();
    const paths = entries.map((e) => e.target.path.trim());
    const byId = paths.every((p) => /^\d+$/.test(p) && !this.#missingIds.has(p));
    let run = await this.#run(dir, byId ? [...new Set(paths)] : undefined, deadline, signal);
    if (byId && run.code !== 0 && /^Sensor Record ID '\d+' not found/m.test(run.stdout + run.stderr)) {
      run = await this.#run(dir, undefined, deadline, signal);
    }
    if (run.code !== 0) {
      const line = firstLine(run.stderr) ?? firstLine(run.stdout) ?? "no message";
      throw new Error(redact(`${COMMAND} for ${this.#endpoint} failed (exit ${run.code}): ${line}`));
    }
    const { rows, malformed } = parseSensorOutput(run.stdout);
    if (!byId) {
      const listed = new Set(rows.map((r) => r.recordId));
      this.#missingIds = new Set(paths.filter((p) => /^\d+$/.test(p) && !listed.has(p)));
    }
    return this.#match(entries, rows, malformed);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const child of this.#children) kill(child);
    await Promise.all([...this.#children].map((c) => c.status));
    const dir = this.#dir;
    this.#dir = undefined;
    if (dir) {
      const { path } = await dir.catch(() => ({ path: undefined }));
      if (path) await Deno.remove(path, { recursive: true }).catch(() => {});
    }
  }

  #match(entries: readonly MetricEntry[], rows: SensorRow[], malformed: string[]): PollResult {
    const readings: Reading[] = [];
    const errors: EntryError[] = [];
    const byId = new Map(rows.map((r) => [r.recordId, r]));
    const unparsed = malformed.length === 0
      ? ""
      : `; ${malformed.length} output line(s) could not be parsed, the first: '${malformed[0]}'`;
    for (const entry of entries) {
      const sensor = entry.target.path.trim();
      let row: SensorRow | undefined;
      if (/^\d+$/.test(sensor)) {
        row = byId.get(sensor);
        if (!row) {
          errors.push({ entry, message: `No sensor with record ID ${sensor} on BMC ${this.#endpoint}${unparsed}` });
          continue;
        }
      } else {
        const named = rows.filter((r) => r.name === sensor);
        if (named.length !== 1) {
          const message = named.length === 0
            ? `No sensor named '${sensor}' on BMC ${this.#endpoint}${unparsed}`
            : `Sensor name '${sensor}' is ambiguous on BMC ${this.#endpoint} (record IDs ${
              named.map((r) => r.recordId).join(", ")
            }): use a record ID`;
          errors.push({ entry, message });
          continue;
        }
        row = named[0]!;
      }
      if (row.reading === undefined) {
        errors.push({
          entry,
          message: `Sensor ${row.recordId} '${row.name}' on BMC ${this.#endpoint} reads N/A ` +
            "(not available: host powered off, sensor absent or not scanning)",
        });
        continue;
      }
      readings.push({ entry, value: row.reading });
    }
    return { readings, errors };
  }

  #privateDir(): Promise<PrivateDir> {
    this.#dir ??= (async () => {
      const path = await Deno.makeTempDir({ prefix: "kwollector-ipmi-" });
      await Deno.chmod(path, 0o700);
      const cacheDir = `${path}/sdr-cache`;
      await Deno.mkdir(cacheDir, { mode: 0o700 });
      const configFile = `${path}/freeipmi.conf`;
      await Deno.writeTextFile(configFile, freeipmiConfig(this.#target), { mode: 0o600, createNew: true });
      await Deno.chmod(configFile, 0o600);
      return { path, configFile, cacheDir };
    })();
    // A failed creation is retried on the next poll.
    this.#dir.catch(() => this.#dir = undefined);
    return this.#dir;
  }

  async #run(
    dir: PrivateDir,
    recordIds: string[] | undefined,
    deadline: number,
    signal: AbortSignal,
  ): Promise<RunResult> {
    const args = [
      "-h",
      this.#hostArg,
      `--config-file=${dir.configFile}`,
      `--sdr-cache-directory=${dir.cacheDir}`,
      "--sdr-cache-recreate",
      "--quiet-cache",
      "--comma-separated-output",
      "--no-header-output",
      "--bridge-sensors",
    ];
    if (recordIds) args.push(`--record-ids=${recordIds.join(",")}`);
    signal.throwIfAborted();
    if (this.#closed) throw new Error(`IPMI source ${this.#endpoint} was closed during the poll`);
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(COMMAND, {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        // A minimal environment: the collector's own (KWOLLECT_DB_PASSWORD...) never reaches a child.
        clearEnv: true,
        env: CHILD_ENV,
      }).spawn();
    } catch (err) {
      throw new Error(`Cannot run ${COMMAND} (freeipmi-tools) for ${this.#endpoint}: ${(err as Error).message}`);
    }
    this.#children.add(child);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      kill(child);
    }, Math.max(0, deadline + KILL_GRACE_MS - performance.now()));
    const onAbort = () => kill(child);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      // Waits for the exit (and so reaps the child) and collects both streams.
      const out = await child.output();
      if (signal.aborted) throw signal.reason;
      if (timedOut) {
        throw new Error(`${COMMAND} for ${this.#endpoint} got no answer within ${this.#timeoutMs} ms and was killed`);
      }
      if (this.#closed) throw new Error(`IPMI source ${this.#endpoint} was closed during the poll`);
      const decoder = new TextDecoder();
      return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      this.#children.delete(child);
    }
  }
}

function kill(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // Already exited.
  }
}

function firstLine(text: string): string | undefined {
  return text.split("\n").map((l) => l.trim()).find((l) => l !== "");
}
