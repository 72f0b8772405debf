/**
 * # Time slices: long work that lets timers fire on time
 *
 * Everything runs on one event loop: a synchronous stretch of work delays every timer behind it,
 * so one device of 50,000 series would make a 1 s device miss its slots. Work that can be long
 * (reading a large body, turning a large poll into samples) is cut into slices: it asks
 * `due()` between two units of work and, once SLICE_MS has gone by since the event loop last had
 * a turn, awaits `yieldToEventLoop()` (a zero-delay timer: due timers and I/O run first).
 * Work that never runs that long never yields, so small polls stay synchronous.
 */

/** Longest a sliced task holds the event loop before yielding to it, in ms. */
export const SLICE_MS = 10;

export class TimeSlice {
  #start = performance.now();

  /** Whether the slice is spent: the caller should `yield()` before the next unit of work. */
  due(): boolean {
    return performance.now() - this.#start >= SLICE_MS;
  }

  /** Yields to the event loop and starts a new slice. */
  async yield(): Promise<void> {
    await yieldToEventLoop();
    this.#start = performance.now();
  }
}

/** Hands the event loop to due timers and I/O, then comes back. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
