import { fileURLToPath } from "node:url";
import { V8_FLAGS } from "../compile.ts";

/**
 * Runs the collector from this checkout as a separate process, the way an operator runs the
 * binary (same V8 heap limit): `deno run -A main.ts <subcommand> CONFIG [--key value ...]`.
 */
const MAIN_TS = fileURLToPath(new URL("../../main.ts", import.meta.url));
const DENO_JSON = fileURLToPath(new URL("../../deno.json", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class KwollectorCli {
  #config: string;
  #cwd: string;

  constructor(opts: { configPath: string; cwd: string }) {
    this.#config = opts.configPath;
    this.#cwd = opts.cwd;
  }

  #command(subcommand: string, extra: string[], piped: boolean): Deno.Command {
    return new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", V8_FLAGS, "--config", DENO_JSON, MAIN_TS, subcommand, this.#config, ...extra],
      cwd: this.#cwd,
      stdin: "null",
      stdout: "piped",
      stderr: piped ? "piped" : "inherit",
      env: { NO_COLOR: "1" },
    });
  }

  /** Runs a subcommand to its end. */
  async output(subcommand: string, extra: string[] = []): Promise<CliResult> {
    const out = await this.#command(subcommand, extra, true).output();
    const text = new TextDecoder();
    return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  }

  /** Starts `run`; each line the collector logs is handed to `onLog`. */
  spawnRun(onLog: (line: string) => void): RunningCollector {
    const child = this.#command("run", [], true).spawn();
    const drained = Promise.all([forEachLine(child.stdout, onLog), forEachLine(child.stderr, onLog)]);
    return {
      pid: child.pid,
      status: child.status.then(async (s) => (await drained, s)),
      stop: (signal: Deno.Signal) => {
        try {
          child.kill(signal);
        } catch {
          // Already exited.
        }
      },
    };
  }
}

export interface RunningCollector {
  pid: number;
  status: Promise<Deno.CommandStatus>;
  stop(signal: Deno.Signal): void;
}

async function forEachLine(stream: ReadableStream<Uint8Array>, fn: (line: string) => void): Promise<void> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + text).split("\n");
    rest = lines.pop() ?? "";
    lines.forEach(fn);
  }
  if (rest !== "") fn(rest);
}
