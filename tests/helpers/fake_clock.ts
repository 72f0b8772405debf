import type { Clock, TimerId } from "../../src/clock.ts";

/** A clock whose time moves only when the test advances it; timers fire in time order. */
export class FakeClock implements Clock {
  #wall: number;
  #mono = 0;
  #seq = 0;
  #timers = new Map<number, { at: number; fn: () => void; seq: number }>();
  #fired = 0;

  #earlyMs: number;

  /** `earlyMs`: timers fire that much before their due time, as Deno's sometimes do. */
  constructor(wallStartMs = Date.UTC(2026, 0, 1), opts: { earlyMs?: number } = {}) {
    this.#wall = wallStartMs;
    this.#earlyMs = opts.earlyMs ?? 0;
  }

  now(): number {
    return this.#wall + this.#mono;
  }

  monotonic(): number {
    return this.#mono;
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#mono + Math.max(0, ms - this.#earlyMs), fn, seq: id });
    return id as unknown as TimerId;
  }

  clearTimeout(id: TimerId): void {
    this.#timers.delete(id as unknown as number);
  }

  /** Timers set and neither fired nor cleared. */
  pendingTimers(): number {
    return this.#timers.size;
  }

  /** Timers fired so far: the wake-ups of a process on this clock. */
  firedTimers(): number {
    return this.#fired;
  }

  /** Steps the wall clock alone (an NTP step), without firing timers. */
  stepWallClock(ms: number): void {
    this.#wall += ms;
  }

  /**
   * The process stops for `ms` (a blocked event loop, SIGSTOP, CPU starvation): time moves and no
   * timer fires; the overdue ones fire late, in order, at the next `advance`.
   */
  stall(ms: number): void {
    this.#mono += ms;
  }

  /** Advances time by `ms`, firing due timers in order and letting promises settle between. */
  async advance(ms: number): Promise<void> {
    const end = this.#mono + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void; seq: number }] | undefined;
      for (const e of this.#timers) {
        if (e[1].at <= end && (!next || e[1].at < next[1].at || (e[1].at === next[1].at && e[1].seq < next[1].seq))) {
          next = e;
        }
      }
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#mono = Math.max(this.#mono, next[1].at);
      this.#fired++;
      next[1].fn();
      await settle();
    }
    this.#mono = end;
    await settle();
  }
}

/** Lets pending promise callbacks run (a real macrotask turn). */
export function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}
