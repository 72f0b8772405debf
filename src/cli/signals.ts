import { logger } from "../log.ts";

/**
 * Stop requests (SIGINT, SIGTERM) and SIGHUP for the long-running subcommands, listened to from
 * the first moment: main.ts calls `listenForStop()` before it even loads the subcommand's code,
 * so a SIGTERM that arrives while a collector is starting stops it cleanly (exit 0) instead of
 * killing it. The subcommand then takes the same signal with `stopSignal()`.
 *
 * SIGHUP calls the subcommand's `onHangup` (run: reload metrics.d; wattmetre: logged and
 * ignored); without one it stops cleanly like SIGTERM (flush, whose terminal went away). A
 * SIGHUP that arrives before the subcommand took the signal is remembered for it.
 */
let controller: AbortController | undefined;
let onHangup: (() => void) | undefined;
let hangupPending = false;

const stop = () => {
  if (controller!.signal.aborted) Deno.exit(130);
  logger.info("Stopping: finishing in-flight polls and committing them");
  controller!.abort();
};
const hangup = () => {
  if (onHangup) onHangup();
  else hangupPending = true;
};

/** Starts listening for SIGINT, SIGTERM and SIGHUP (once per process). */
export function listenForStop(): void {
  if (controller) return;
  controller = new AbortController();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGHUP", hangup);
}

/** The stop request of this process; `dispose()` stops listening. */
export function stopSignal(opts: { onHangup?: () => void } = {}): { signal: AbortSignal; dispose(): void } {
  listenForStop();
  onHangup = opts.onHangup ?? stop;
  if (hangupPending && !opts.onHangup) stop();
  hangupPending = false;
  return {
    signal: controller!.signal,
    dispose() {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      Deno.removeSignalListener("SIGHUP", hangup);
      controller = undefined;
      onHangup = undefined;
    },
  };
}
