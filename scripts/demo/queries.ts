import type { Sql } from "../../src/central/connect.ts";
import { compareServedStored, type DeviceTally, keyOf } from "./served.ts";

/**
 * What the demo asks the central database: how many of its samples arrived, the latest ones
 * (through the API's get_metrics), and at the end the exact comparison with what the devices
 * served.
 */
export interface Window {
  devices: string[];
  since: Date;
}

export async function storedCount(sql: Sql, w: Window): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM metrics WHERE device_id = ANY(${w.devices}) AND "timestamp" >= ${w.since}`;
  return row?.n ?? 0;
}

export interface LatestSample {
  deviceId: string;
  metricId: string;
  value: number;
}

/** The newest sample of each device over the last `seconds`, read as a PostgREST client would. */
export async function latestThroughApi(sql: Sql, devices: string[], seconds: number): Promise<LatestSample[]> {
  const end = new Date();
  const start = new Date(end.getTime() - seconds * 1000);
  const rows = await sql<{ device_id: string; metric_id: string; value: number; timestamp: Date }[]>`
    SELECT device_id, metric_id, value, "timestamp"
    FROM api.get_metrics(devices => ${devices.join(",")}, start_time => ${start.toISOString()},
                         end_time => ${end.toISOString()})`;
  return newestPerDevice(rows);
}

function newestPerDevice(
  rows: readonly { device_id: string; metric_id: string; value: number; timestamp: Date }[],
): LatestSample[] {
  const newest = new Map<string, { deviceId: string; metricId: string; value: number; at: number }>();
  for (const r of rows) {
    const at = new Date(r.timestamp).getTime();
    const prior = newest.get(r.device_id);
    if (!prior || at > prior.at) {
      newest.set(r.device_id, { deviceId: r.device_id, metricId: r.metric_id, value: Number(r.value), at });
    }
  }
  return [...newest.values()].sort((a, b) => a.deviceId.localeCompare(b.deviceId))
    .map(({ deviceId, metricId, value }) => ({ deviceId, metricId, value }));
}

export interface Verdict {
  tallies: DeviceTally[];
  /** Rows of the window, and rows sharing (device, metric, timestamp, labels) with another. */
  rows: number;
  identityDuplicates: number;
  /** Delivery ledger of the demo's spool: batches, and seq ranges missing between them. */
  batches: number;
  ledgerGaps: number;
}

export async function verify(
  sql: Sql,
  w: Window,
  served: ReadonlyMap<string, number>,
  spoolId: string,
): Promise<Verdict> {
  const storedRows = await sql<{ device_id: string; metric_id: string; value: number; n: number }[]>`
    SELECT device_id, metric_id, value, count(*)::int AS n FROM metrics
    WHERE device_id = ANY(${w.devices}) AND "timestamp" >= ${w.since}
    GROUP BY device_id, metric_id, value`;
  const stored = new Map<string, number>();
  for (const r of storedRows) {
    stored.set(keyOf({ deviceId: r.device_id, metricId: r.metric_id, value: Number(r.value) }), r.n);
  }
  const [identity] = await sql<{ rows: number; distinct_rows: number }[]>`
    SELECT count(*)::int AS rows,
           count(DISTINCT (device_id, metric_id, "timestamp", labels))::int AS distinct_rows
    FROM metrics WHERE device_id = ANY(${w.devices}) AND "timestamp" >= ${w.since}`;
  const [ledger] = await sql<{ batches: number }[]>`
    SELECT count(*)::int AS batches FROM kwollect_ledger WHERE spool_id = ${spoolId} AND kind = 'data'`;
  const [gaps] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${spoolId}`;
  return {
    tallies: compareServedStored(served, stored),
    rows: identity?.rows ?? 0,
    identityDuplicates: (identity?.rows ?? 0) - (identity?.distinct_rows ?? 0),
    batches: ledger?.batches ?? 0,
    ledgerGaps: gaps?.n ?? 0,
  };
}
