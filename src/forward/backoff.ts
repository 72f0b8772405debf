/**
 * Capped exponential backoff with full jitter: attempt n waits a random time in
 * [0, min(cap, base × 2^n)], so a fleet of collectors coming back together spreads out.
 */
export class Backoff {
  #attempt = 0;
  readonly baseMs: number;
  readonly capMs: number;
  #random: () => number;

  constructor(opts: { baseMs?: number; capMs: number; random?: () => number }) {
    this.baseMs = opts.baseMs ?? 250;
    this.capMs = opts.capMs;
    this.#random = opts.random ?? Math.random;
  }

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.round(this.#random() * ceiling);
  }

  reset(): void {
    this.#attempt = 0;
  }

  get attempts(): number {
    return this.#attempt;
  }
}
