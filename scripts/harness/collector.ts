/** Runs the kwollector CLI as a child process, the way systemd runs it, for process-level tests. */
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

export interface Collector {
  child: Deno.ChildProcess;
  /** Lines the collector logged so far. */
  logs(): string[];
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

export function spawnCollector(args: string[], env: Record<string, string> = {}): Collector {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { lines, done } = collectLines(child);
  return {
    child,
    logs: () => lines,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* already exited */ }
      const status = await child.status;
      await done;
      return status;
    },
  };
}

/** Runs a CLI subcommand to completion. */
export async function kwollector(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Gathers a child's stdout and stderr lines as they come; `done` resolves at end of output. */
export function collectLines(
  child: { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array> },
): { lines: string[]; done: Promise<unknown> } {
  const lines: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    }
    if (rest) lines.push(rest);
  };
  return { lines, done: Promise.all([collect(child.stdout), collect(child.stderr)]) };
}
