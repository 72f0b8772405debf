import { GLIBC_TUNABLES, RUNTIME_FLAGS } from "../compile.ts";
import { type CollectorProcess, kwollector, startCollector } from "../harness/collector.ts";

/**
 * The collector from this checkout as the demo runs it, the way an operator runs the binary (same
 * runtime flags, glibc's malloc tuned as the systemd units tune it), in the demo's directory,
 * without colours: `kwollector <subcommand> CONFIG [--key value ...]`.
 */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class KwollectorCli {
  #config: string;
  #opts: { cwd: string; env: Record<string, string>; v8Flags: string[] };

  constructor(opts: { configPath: string; cwd: string }) {
    this.#config = opts.configPath;
    this.#opts = { cwd: opts.cwd, env: { NO_COLOR: "1", GLIBC_TUNABLES }, v8Flags: [...RUNTIME_FLAGS] };
  }

  /** Runs a subcommand to its end. */
  output(subcommand: string, extra: string[] = []): Promise<CliResult> {
    return kwollector([subcommand, this.#config, ...extra], this.#opts);
  }

  /** Starts `run`; each line the collector logs is handed to `onLog`. */
  spawnRun(onLog: (line: string) => void): CollectorProcess {
    return startCollector(["run", this.#config], { ...this.#opts, onLine: onLog });
  }
}
