import { endpointOf } from "../central/connect.ts";
import { systemClock } from "../clock.ts";
import { UsageError } from "../config/errors.ts";
import { Forwarder } from "../forward/forwarder.ts";
import { parseCommand } from "./args.ts";
import { stopSignal } from "./signals.ts";
import type { Config } from "../config/defaults.ts";
import { AsideForwarder } from "../forward/aside_forwarder.ts";
import { openSpoolLease } from "../spool/spool.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { formatCount, formatDuration } from "./format.ts";

export const FLUSH_HELP = `kwollector flush [CONFIG] [--timeout_s N] [--key value ...]

Forwards the whole spool to the central database now and exits: 0 when the spool is empty,
3 when the central database is unreachable or the timeout (default: none) passed, 1 when the
spool's disk refuses. Spools moved aside (damaged, salvaged) are forwarded too. Shows a
progress bar with rate and ETA on a terminal, plain lines otherwise. Safe to run while
'kwollector run' is running on the same spool.

Examples:
  kwollector flush /etc/kwollect/kwollector.yaml
  kwollector flush kwollector.yaml --timeout_s 600`;

export const EXIT_UNREACHABLE = 3;

export async function flushCommand(argv: string[]): Promise<number> {
  const { resolved, values } = parseCommand(argv, { values: ["timeout_s"] });
  const c = resolved.config;
  const timeoutText = values.get("timeout_s");
  const timeoutS = timeoutText === undefined ? Infinity : Number(timeoutText);
  if (!(timeoutS > 0)) throw new UsageError(`Invalid --timeout_s '${timeoutText}': expected a number of seconds > 0`);
  const started = systemClock.monotonic();
  const deadlineMs = started + timeoutS * 1000;
  const stop = stopSignal();
  try {
    const live = await flushLive(c, deadlineMs, stop.signal, started);
    const aside = new AsideForwarder({
      spoolPath: c.spool_path,
      config: c,
      endpoint: endpointOf(c),
      telemetry: new Telemetry(),
      open: openSpoolLease,
    });
    const asideDone = await aside.pass(deadlineMs, stop.signal);
    if (!asideDone) {
      console.error(`Spools moved aside next to '${c.spool_path}' still hold samples (see 'kwollector status')`);
    }
    return live === 0 && asideDone ? 0 : live === 0 ? EXIT_UNREACHABLE : live;
  } finally {
    stop.dispose();
  }
}

/** Drains the live spool; returns the exit code (0 empty, 3 central unreachable, 1 local trouble). */
async function flushLive(c: Config, deadlineMs: number, signal: AbortSignal, started: number): Promise<number> {
  let spool;
  try {
    spool = openSpoolLease(c.spool_path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      console.log(`Spool '${c.spool_path}' does not exist: nothing to flush`);
      return 0;
    }
    throw err;
  }
  const forwarder = new Forwarder({ lease: spool.lease, endpoint: endpointOf(c), config: c });
  const total = spool.view.stats().rows;
  const progress = new Progress(total, Deno.stdout.isTerminal());
  try {
    const empty = await forwarder.drain({
      deadlineMs,
      signal,
      onProgress: () => progress.update(forwarder.counters.rows + forwarder.counters.reconciledRows),
    });
    progress.done();
    const stats = spool.view.stats();
    if (empty && stats.rows === 0) {
      console.log(
        `Spool empty: ${formatCount(forwarder.counters.rows)} samples forwarded in ${
          formatDuration((systemClock.monotonic() - started) / 1000)
        }`,
      );
      return 0;
    }
    const last = forwarder.lastFailure;
    const why = last === undefined
      ? "timeout"
      : last.kind === "local"
      ? `the spool refused: ${last.message}`
      : `central database unreachable: ${last.message}`;
    console.error(`Spool not empty: ${formatCount(stats.rows)} samples left (${why})`);
    return last?.kind === "local" ? 1 : EXIT_UNREACHABLE;
  } finally {
    await forwarder.close();
    spool.close();
  }
}

/** A progress bar on a terminal, a plain line every few seconds otherwise. */
class Progress {
  #total: number;
  #tty: boolean;
  #started = performance.now();
  #lastPrint = 0;
  #done = 0;

  constructor(total: number, tty: boolean) {
    this.#total = Math.max(total, 1);
    this.#tty = tty;
  }

  update(done: number): void {
    this.#done = done;
    const now = performance.now();
    if (now - this.#lastPrint < (this.#tty ? 200 : 5000)) return;
    this.#lastPrint = now;
    const line = this.#line(now);
    if (this.#tty) Deno.stdout.writeSync(new TextEncoder().encode(`\r${line}\x1b[K`));
    else console.log(line);
  }

  done(): void {
    if (this.#tty) Deno.stdout.writeSync(new TextEncoder().encode(`\r${this.#line(performance.now())}\x1b[K\n`));
  }

  #line(now: number): string {
    const elapsedS = Math.max((now - this.#started) / 1000, 0.001);
    const rate = this.#done / elapsedS;
    const fraction = Math.min(1, this.#done / this.#total);
    const eta = rate > 0 ? (this.#total - this.#done) / rate : Infinity;
    const width = 30;
    const bar = "#".repeat(Math.round(fraction * width)).padEnd(width, " ");
    return `[${bar}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatCount(this.#done)}/${
      formatCount(this.#total)
    } samples  ${formatCount(rate)}/s  ETA ${formatDuration(eta)}`;
  }
}
