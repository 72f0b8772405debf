import type { Sql } from "./connect.ts";

/** A row of the central `promoted_metrics` table (sql/0001_core.sql). */
export interface PromotedRow {
  deviceId: string;
  /** A regular expression over metric names; null promotes every metric of the device. */
  metricId: string | null;
}

/**
 * The collector's reads of `promoted_metrics`, over a connection of their own: opened at the
 * first read, and dropped (`drop()`) when a read failed or took too long, so that the next read
 * opens a new one instead of waiting behind a stuck connection.
 */
export interface PromotedMetrics {
  read(): Promise<PromotedRow[]>;
  drop(): Promise<void>;
}

/** Reads promoted_metrics over connections made by `connect`. */
export function promotedMetrics(connect: () => Sql): PromotedMetrics {
  let sql: Sql | undefined;
  return {
    async read() {
      sql ??= connect();
      const rows = await sql<{ device_id: string; metric_id: string | null }[]>`
        SELECT device_id, metric_id FROM promoted_metrics`;
      return rows.map((r) => ({ deviceId: r.device_id, metricId: r.metric_id }));
    },
    async drop() {
      const open = sql;
      sql = undefined;
      await open?.end({ timeout: 0 }).catch(() => {});
    },
  };
}
