import type { Clock, TimerId } from "../clock.ts";

/**
 * Many due times behind one timer: what is due at each monotonic time, and a single clock timer
 * for the earliest. A thousand poll groups cost one pending timer, and every item due at the same
 * time (groups whose slots coincide) is run in one wake-up of the process instead of one each.
 *
 * Guarantees: an item never runs before its time, except by the millisecond a timer may fire
 * early (EARLY_MS); items run in the order of their times, and items of one time in the order they
 * were added; an item added while others run is run at its own time, not before; `clear()` leaves
 * no timer behind.
 *
 * `afterFire` runs at the end of each wake-up, once the timer is set again: a timer its owner
 * sets there for later than the next wake-up (the pipeline's housekeeping fallback) is never the
 * one the runtime sleeps on. Deno's timers arm the runtime's sleep when a timer is set earlier
 * than the one armed, and a timer cleared later still wakes the process at its time (the wake-up
 * then finds nothing to run): set there, and cleared at the next wake-up, it costs none.
 */

/** Timers may fire up to this much before their due time (Deno rounds delays): items that close are run. */
const EARLY_MS = 1;

export class Wakeups<T> {
  #clock: Clock;
  #run: (item: T) => void;
  /** Due times that have items, as a binary min-heap. */
  #times: number[] = [];
  #due = new Map<number, T[]>();
  #timer: TimerId | undefined;
  /** The time the timer is set for. */
  #timerAt = Infinity;
  #firing = false;

  #afterFire: (() => void) | undefined;

  /** `run` is called with each item at its time; it may add items. */
  constructor(clock: Clock, run: (item: T) => void, afterFire?: () => void) {
    this.#clock = clock;
    this.#run = run;
    this.#afterFire = afterFire;
  }

  /** Runs `item` at monotonic time `atMs`. */
  add(atMs: number, item: T): void {
    const list = this.#due.get(atMs);
    if (list) return void list.push(item);
    this.#due.set(atMs, [item]);
    this.#push(atMs);
    if (!this.#firing && atMs < this.#timerAt) this.#setTimer();
  }

  /** Forgets every item and stops the timer. */
  clear(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#times = [];
    this.#due.clear();
  }

  #setTimer(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = this.#times[0] ?? Infinity;
    if (this.#timerAt === Infinity) return;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), this.#timerAt - this.#clock.monotonic());
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const until = this.#clock.monotonic() + EARLY_MS;
    this.#firing = true;
    try {
      while (this.#times.length > 0 && this.#times[0]! <= until) {
        const at = this.#pop();
        const list = this.#due.get(at)!;
        this.#due.delete(at);
        for (const item of list) this.#run(item);
      }
    } finally {
      // What `run` added, and what is left after an exception, is armed again.
      this.#firing = false;
      this.#setTimer();
    }
    this.#afterFire?.();
  }

  #push(at: number): void {
    const h = this.#times;
    let i = h.push(at) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]! <= at) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = at;
  }

  #pop(): number {
    const h = this.#times;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const c = l + 1 < h.length && h[l + 1]! < h[l]! ? l + 1 : l;
      if (h[c]! >= last) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
    return top;
  }
}
