/**
 * What the simulated devices served, value by value, so that the demo can prove at the end that
 * every served value reached the central table once: the multiset of served
 * (device, metric, value) must equal the multiset of stored ones.
 */
export interface ServedValue {
  deviceId: string;
  metricId: string;
  value: number;
}

export class ServedLog {
  #counts = new Map<string, number>();
  #total = 0;

  record(deviceId: string, metricId: string, value: number): void {
    const key = keyOf({ deviceId, metricId, value });
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    this.#total++;
  }

  get total(): number {
    return this.#total;
  }

  /** Served count per (device, metric, value) key. */
  counts(): ReadonlyMap<string, number> {
    return this.#counts;
  }
}

export function keyOf(v: ServedValue): string {
  return JSON.stringify([v.deviceId, v.metricId, v.value]);
}

export interface DeviceTally {
  deviceId: string;
  served: number;
  stored: number;
  lost: number;
  duplicated: number;
}

/**
 * Compares served and stored multisets, per device: a value served n times and stored m times
 * counts max(n - m, 0) as lost and max(m - n, 0) as duplicated.
 */
export function compareServedStored(
  served: ReadonlyMap<string, number>,
  stored: ReadonlyMap<string, number>,
): DeviceTally[] {
  const tallies = new Map<string, DeviceTally>();
  const tally = (key: string) => {
    const deviceId = (JSON.parse(key) as [string, string, number])[0];
    let t = tallies.get(deviceId);
    if (!t) {
      t = { deviceId, served: 0, stored: 0, lost: 0, duplicated: 0 };
      tallies.set(deviceId, t);
    }
    return t;
  };
  for (const key of new Set([...served.keys(), ...stored.keys()])) {
    const n = served.get(key) ?? 0;
    const m = stored.get(key) ?? 0;
    const t = tally(key);
    t.served += n;
    t.stored += m;
    t.lost += Math.max(n - m, 0);
    t.duplicated += Math.max(m - n, 0);
  }
  return [...tallies.values()].sort((a, b) => a.deviceId.localeCompare(b.deviceId));
}
