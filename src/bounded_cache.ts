/**
 * A cache of derived data, bounded, that never thrashes: at most `max` entries; when full, the
 * entries not used during the last two rounds (a round is a poll, a scrape) are swept out, once per
 * round at most; if it is still full, new keys are not cached (`get` keeps missing for them) until
 * a later sweep frees room. So a device with more live series than the bound keeps `max` of them
 * cached, instead of evicting each one before its next use, and one whose series change has the old
 * ones swept out within two rounds. Whatever is dropped costs only its recompute.
 */
export class BoundedCache<K, V> {
  #max: number;
  #entries = new Map<K, { value: V; usedInRound: number }>();
  #round = 0;
  /** A sweep frees what it can for the whole round: at most one per round. */
  #sweptInRound = -1;

  #dropped: ((value: V) => void) | undefined;

  /** `dropped` is told of each value a sweep or `clear` lets go. */
  constructor(max: number, dropped?: (value: V) => void) {
    this.#max = max;
    this.#dropped = dropped;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Starts a round: entries used since are the live ones. */
  nextRound(): void {
    this.#round++;
  }

  get(key: K): V | undefined {
    const cached = this.#entries.get(key);
    if (!cached) return undefined;
    cached.usedInRound = this.#round;
    return cached.value;
  }

  /** Caches `value` when there is room; returns whether it was cached. */
  set(key: K, value: V): boolean {
    if (this.#entries.size >= this.#max && this.#sweptInRound !== this.#round) this.#sweep();
    if (this.#entries.size >= this.#max) return false;
    this.#entries.set(key, { value, usedInRound: this.#round });
    return true;
  }

  clear(): void {
    if (this.#dropped) { for (const { value } of this.#entries.values()) this.#dropped(value); }
    this.#entries.clear();
  }

  /** Whether a new key would be cached now. */
  hasRoom(): boolean {
    if (this.#entries.size >= this.#max && this.#sweptInRound !== this.#round) this.#sweep();
    return this.#entries.size < this.#max;
  }

  #sweep(): void {
    this.#sweptInRound = this.#round;
    for (const [key, cached] of this.#entries) {
      if (cached.usedInRound >= this.#round - 1) continue;
      this.#entries.delete(key);
      this.#dropped?.(cached.value);
    }
  }
}

/**
 * A string that is its own (V8 may keep a slice of a string as a view into the whole): a key kept
 * across rounds does not hold the text it was cut from, such as a piece of an exporter's body.
 */
export function ownCopy(text: string): string {
  return JSON.parse(JSON.stringify(text)) as string;
}
