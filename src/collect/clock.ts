/**
 * Time as the scheduler and forwarder see it: wall-clock time for sample timestamps, monotonic
 * time for scheduling (a stepped wall clock never bunches or stalls polls), and timers. Tests
 * replace it with a fake clock instead of sleeping.
 */
export type TimerId = ReturnType<typeof setTimeout>;

export interface Clock {
  /** Wall-clock milliseconds since the epoch. */
  now(): number;
  /** Monotonic milliseconds, for measuring and scheduling. */
  monotonic(): number;
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  // Deno truncates fractional delays: round up so a timer never fires before its slot.
  setTimeout: (fn, ms) => setTimeout(fn, Math.max(0, Math.ceil(ms))),
  clearTimeout: (id) => clearTimeout(id),
};

/** Resolves after `ms` on `clock`, or at once when `signal` aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const id = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clock.clearTimeout(id);
      resolve();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
