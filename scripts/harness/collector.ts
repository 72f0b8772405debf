/**
 * The collector under test as a child process, started from this checkout the way systemd runs
 * the binary: `deno run -A [V8 flags] main.ts <subcommand> [args]`, for the process-level tests,
 * the torture scenarios, the benchmarks and the demo. Its output is gathered line by line.
 */
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
/** Named explicitly, so a collector started in another directory (the demo's) uses the same one. */
const DENO_JSON = fileURLToPath(new URL("../../deno.json", import.meta.url));

export interface CollectorOptions {
  /** Added to the inherited environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** V8 flags, e.g. the `kwollector` task's heap limit (compile.ts V8_FLAGS); none by default. */
  v8Flags?: readonly string[];
  /** Runs the collector as this command's child (e.g. `["strace", ..., "--"]`); signals still go to the collector. */
  wrapper?: readonly string[];
  /** Runs it in this network namespace (`ip netns exec`, which becomes the collector: same PID). */
  netns?: string;
  /** Each line the collector writes, as it comes. */
  onLine?: (line: string) => void;
  /**
   * Starts it in a session of its own (setsid), so that the kernel's autogroup scheduling gives
   * it a share of its own, as systemd's cgroup per service does, instead of splitting one share
   * with every other process of this session.
   */
  ownSession?: boolean;
  /** Sends its output to /dev/null (a benchmark reads nothing from it); `logs()` stays empty. */
  discardOutput?: boolean;
}

export interface CollectorProcess {
  /** PID of the collector itself (not of a wrapper). */
  pid(): Promise<number>;
  /** Lines the collector wrote so far. */
  logs(): string[];
  /** The exit, once its output is read; through a wrapper, the wrapper's (strace re-raises the signal). */
  status: Promise<Deno.CommandStatus>;
  /** Sends `signal` (SIGTERM by default) to the collector itself, unless it exited, and waits for the exit. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

function denoArgs(args: readonly string[], opts: CollectorOptions): string[] {
  return ["run", "-A", ...opts.v8Flags ?? [], "--config", DENO_JSON, MAIN, ...args];
}

/** Starts `kwollector <args>` (e.g. `["run", CONFIG]`). */
export function startCollector(args: readonly string[], opts: CollectorOptions = {}): CollectorProcess {
  const argv = [...opts.netns ? ["ip", "netns", "exec", opts.netns] : [], Deno.execPath(), ...denoArgs(args, opts)];
  const wrapper = opts.wrapper ?? [];
  const all = [...wrapper, ...argv];
  const output = opts.discardOutput ? "null" : "piped";
  const child = new Deno.Command(all[0]!, {
    args: all.slice(1),
    env: opts.env ?? {},
    ...(opts.cwd && { cwd: opts.cwd }),
    ...(opts.ownSession && { detached: true }),
    stdin: "null",
    stdout: output,
    stderr: output,
  }).spawn();
  const { lines, done } = opts.discardOutput
    ? { lines: [], done: Promise.resolve() }
    : collectLines(child, opts.onLine);
  let exited = false;
  const status = child.status.then(async (s) => {
    exited = true;
    await done;
    return s;
  });
  let pid: Promise<number> | undefined;
  const findPid = async (): Promise<number> => {
    if (wrapper.length === 0) return child.pid;
    // The wrapper's child is the collector.
    for (let i = 0; i < 2000 && !exited; i++) {
      try {
        const kids = (await Deno.readTextFile(`/proc/${child.pid}/task/${child.pid}/children`)).trim();
        if (kids) return Number(kids.split(/\s+/)[0]);
      } catch { /* the wrapper is starting or gone */ }
      await sleep(5);
    }
    throw new Error(`No collector process under wrapper '${wrapper[0]}' (pid ${child.pid})`);
  };
  return {
    pid: () => (pid ??= findPid()),
    logs: () => lines,
    status,
    async stop(signal: Deno.Signal = "SIGTERM") {
      if (!exited) {
        try {
          Deno.kill(await (pid ??= findPid()), signal);
        } catch { /* already gone */ }
      }
      return await status;
    },
  };
}

/** Runs `kwollector <args>` to its end. */
export async function kwollector(
  args: readonly string[],
  opts: Pick<CollectorOptions, "env" | "cwd" | "v8Flags"> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: denoArgs(args, opts),
    env: opts.env ?? {},
    ...(opts.cwd && { cwd: opts.cwd }),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** The spool's rows as `status --json` reports them (works while the collector runs). */
export async function spoolRows(config: string): Promise<number> {
  const out = await kwollector(["status", config, "--json"]);
  if (out.code !== 0) throw new Error(`kwollector status failed (${out.code}): ${out.stderr}`);
  return Number(JSON.parse(out.stdout).spool_rows);
}

/** Stops the running collector with SIGTERM, then forwards what is left with `flush`; returns what went wrong. */
export async function finalDrain(collector: CollectorProcess, config: string): Promise<string[]> {
  const problems: string[] = [];
  const stopped = await collector.stop("SIGTERM");
  if (stopped.code !== 0) {
    problems.push(`the last collector exited with ${stopped.code}/${stopped.signal} on SIGTERM`);
  }
  const flush = await kwollector(["flush", config, "--timeout_s", "60"]);
  if (flush.code !== 0) problems.push(`flush exited ${flush.code}: ${flush.stderr.trim().slice(-300)}`);
  return problems;
}

/** Gathers a child's stdout and stderr lines as they come; `done` resolves at end of output. */
export function collectLines(
  child: { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array> },
  onLine?: (line: string) => void,
): { lines: string[]; done: Promise<unknown> } {
  const lines: string[] = [];
  const add = (line: string) => {
    lines.push(line);
    onLine?.(line);
  };
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      parts.forEach(add);
    }
    if (rest) add(rest);
  };
  return { lines, done: Promise.all([collect(child.stdout), collect(child.stderr)]) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `p`'s value, or undefined once `ms` have passed (the timer is cleared either way). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
