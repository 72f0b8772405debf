/**
 * A `deno run` child process that talks in lines: the torture scenarios drive their spool
 * processes through it and kill them with SIGKILL at chosen moments (a real crash).
 */
export class LineChild {
  readonly child: Deno.ChildProcess;
  #queue: string[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  #stderr = "";
  #pumps: Promise<void>;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #encoder = new TextEncoder();

  constructor(script: string, args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.child.stdin.getWriter();
    this.#pumps = Promise.all([this.#pumpStdout(), this.#pumpStderr()]).then(() => {});
  }

  /** The last 4 KB the child wrote on stderr (for failure messages). */
  get stderrTail(): string {
    return this.#stderr.slice(-4096);
  }

  async #pumpStdout(): Promise<void> {
    let rest = "";
    for await (const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      if (parts.length > 0) {
        this.#queue.push(...parts);
        this.#wake();
      }
    }
    this.#ended = true;
    this.#wake();
  }

  async #pumpStderr(): Promise<void> {
    for await (const chunk of this.child.stderr.pipeThrough(new TextDecoderStream())) {
      this.#stderr = (this.#stderr + chunk).slice(-65536);
    }
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** Writes one line to the child's stdin; a child already dead is not an error here. */
  async send(line: string): Promise<void> {
    try {
      await this.#stdin.write(this.#encoder.encode(line + "\n"));
    } catch { /* the child was killed: its answer will never come, which the caller expects */ }
  }

  /** The next line, or undefined once stdout closed or `timeoutMs` passed. */
  async next(timeoutMs: number): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length === 0 && !this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#waiter = undefined;
    }
    return this.#queue.shift();
  }

  /** Lines already received and not consumed, without waiting. */
  drain(): string[] {
    return this.#queue.splice(0);
  }

  signal(sig: Deno.Signal): void {
    try {
      this.child.kill(sig);
    } catch { /* already exited */ }
  }

  /** SIGKILL (unless the child already exited), then waits for it and its pipes. */
  async kill(): Promise<Deno.CommandStatus> {
    this.signal("SIGKILL");
    return await this.close();
  }

  /** Closes stdin and waits for the child to exit on its own, then for its pipes. */
  async close(): Promise<Deno.CommandStatus> {
    await this.#stdin.close().catch(() => {});
    const status = await this.child.status;
    await this.#pumps;
    return status;
  }
}
