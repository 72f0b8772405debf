/**
 * A cache of derived data, bounded, that never thrashes: at most `max` entries; when full, the
 * entries not used during the last two rounds (a round is a poll, a scrape) are swept out, once per
 * round at most; if it is still full, new keys are not cached (`get` keeps missing for them) until
 * a later sweep frees room. So a device with more live series than the bound keeps `max` of them
 * cached, instead of evicting each one before its next use, and one whose series change has the old
 * ones swept out within two rounds. Whatever is dropped costs only its recompute.
 *
 * A lookup tries the place after the last key found before it hashes the key: the caches of a
 * device's series are asked in the order of its lines, rows or OIDs, the same at every round, and
 * their keys took their places in that order, so most lookups are one comparison of the key with
 * the one kept in that place (the same string object for the caches keyed by a series' text)
 * instead of a hash table's probe. Whatever the order, the answer is what the key's entry holds.
 */
export class BoundedCache<K, V> {
  #max: number;
  /**
   * Key → its slot in `#values` and `#usedInRound`: a number, not a record per entry (a record of
   * two fields was 40 bytes of old space per cached series, 1.7 MB under the hostile bench).
   */
  #slots = new Map<K, number>();
  #values: (V | undefined)[] = [];
  /** The key of each slot, to check a lookup's guess (undefined once freed: it keeps no key alive). */
  #keys: (K | undefined)[] = [];
  #usedInRound: number[] = [];
  /** The slot of the last key found: the next lookup tries the one after it first. */
  #lastSlot = -1;
  /** Slots a sweep emptied, taken again before the arrays grow. */
  #freeSlots: number[] = [];
  #round = 0;
  /** The last round in which the cache was asked for a key or given one. */
  #askedInRound = 0;
  /** A sweep frees what it can for the whole round: at most one per round. */
  #sweptInRound = -1;

  #dropped: ((value: V) => void) | undefined;

  /** `dropped` is told of each value a sweep or `clear` lets go. */
  constructor(max: number, dropped?: (value: V) => void) {
    this.#max = max;
    this.#dropped = dropped;
  }

  get size(): number {
    return this.#slots.size;
  }

  /** Entries it holds at most. */
  get capacity(): number {
    return this.#max;
  }

  /** Whether nobody asked for a key nor gave one during the last two rounds: its owner may drop it. */
  get idle(): boolean {
    return this.#askedInRound < this.#round - 1;
  }

  /** Starts a round: entries used since are the live ones. */
  nextRound(): void {
    this.#round++;
  }

  get(key: K): V | undefined {
    this.#askedInRound = this.#round;
    let slot = this.#lastSlot + 1;
    // A freed slot's key is undefined, never a key asked for.
    if (slot >= this.#keys.length || this.#keys[slot] !== key) {
      const found = this.#slots.get(key);
      if (found === undefined) return undefined;
      slot = found;
    }
    this.#lastSlot = slot;
    this.#usedInRound[slot] = this.#round;
    return this.#values[slot];
  }

  /** Caches `value` when there is room; returns whether it was cached. */
  set(key: K, value: V): boolean {
    this.#askedInRound = this.#round;
    if (this.#slots.size >= this.#max && this.#sweptInRound !== this.#round) this.#sweep();
    if (this.#slots.size >= this.#max) return false;
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = this.#freeSlots.pop() ?? this.#values.length;
      this.#slots.set(key, slot);
      this.#keys[slot] = key;
    }
    this.#values[slot] = value;
    this.#usedInRound[slot] = this.#round;
    return true;
  }

  clear(): void {
    if (this.#dropped) { for (const slot of this.#slots.values()) this.#dropped(this.#values[slot] as V); }
    this.#slots.clear();
    this.#values = [];
    this.#keys = [];
    this.#usedInRound = [];
    this.#freeSlots = [];
    this.#lastSlot = -1;
  }

  /** Whether a new key would be cached now. */
  hasRoom(): boolean {
    if (this.#slots.size >= this.#max && this.#sweptInRound !== this.#round) this.#sweep();
    return this.#slots.size < this.#max;
  }

  #sweep(): void {
    this.#sweptInRound = this.#round;
    // By slot, not through the map's entries: an entry's [key, slot] pair was an allocation per
    // cached series at every sweep.
    const keys = this.#keys;
    for (let slot = 0; slot < keys.length; slot++) {
      const key = keys[slot];
      if (key === undefined || this.#usedInRound[slot]! >= this.#round - 1) continue;
      const value = this.#values[slot] as V;
      this.#slots.delete(key);
      this.#values[slot] = undefined;
      this.#keys[slot] = undefined;
      this.#freeSlots.push(slot);
      this.#dropped?.(value);
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
