/**
 * Time as every layer sees it (this module sits below all of them): wall-clock time for sample
 * timestamps, monotonic time for scheduling (a stepped wall clock never bunches or stalls polls),
 * timers, and the one way to bound a wait (`deadline`). Tests replace the clock with a fake one
 * instead of sleeping.
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

/** The error a `deadline` rejects with: `code` ETIMEDOUT, so callers classify it as a timeout. */
export class DeadlineError extends Error {
  readonly code = "ETIMEDOUT";
  constructor(message: string) {
    super(message);
    this.name = "DeadlineError";
  }
}

/**
 * `promise`, bounded: it rejects with a DeadlineError (`message`) once `ms` have passed on
 * `clock`, or with the signal's reason as soon as `signal` aborts, whichever comes first. The
 * timer and the listener are removed either way. What `promise` was doing is not stopped: the
 * caller cancels it (closes the connection, kills the child) when the deadline passes.
 */
export function deadline<T>(
  promise: Promise<T>,
  opts: { ms: number; message: string; signal?: AbortSignal; clock?: Clock },
): Promise<T> {
  const clock = opts.clock ?? systemClock;
  return new Promise<T>((resolve, reject) => {
    const signal = opts.signal;
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      reject(new DeadlineError(opts.message));
    }, opts.ms);
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        clock.clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err) => {
        clock.clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
