/**
 * The end-of-run check of a torture scenario: once the collector is stopped and its spool drained,
 * every sample the spool committed must be in the central table exactly once, with a ledger that
 * tiles every seq. The exporter's values name their polls (see the counting exporter), so a
 * missing value is a poll that never reached the spool and a repeated (series, value) pair a
 * duplicate.
 */
import { DatabaseSync } from "node:sqlite";
import type { PgCluster } from "../peers/postgres.ts";
import type { CountingExporter } from "../peers/prometheus_exporter.ts";
import { openSpoolView, type SpoolStats } from "../../src/spool/spool.ts";
import { EXPORTER_DEVICE } from "./rig.ts";

export interface DeliveryCheck {
  /** Values the exporter served (polls answered). */
  served: number;
  /** Seqs the spool ever committed (next_seq - 1). */
  committedSeqs: number;
  spoolRowsLeft: number;
  ledgerDataRows: number;
  ledgerBatches: number;
  ledgerQuarantinedSeqs: number;
  ledgerDroppedSeqs: number;
  ledgerGaps: number;
  ledgerLastSeq: number;
  centralRows: number;
  /** Central rows of the collector's own telemetry (device edge_id). */
  telemetryRows: number;
  duplicateRows: number;
  /** Polls whose samples are neither all central nor all quarantined. */
  partialPolls: number;
  quarantinedRows: number;
  /** Served values found neither central nor in quarantine: polls that never reached the spool. */
  missingValues: number[];
  /** Quarantined samples. */
  quarantine: { deviceId: string; metricId: string; value: number; labels: Record<string, string>; reason: string }[];
  /** Central rows of `scrape_count`: value and timestamp (ms). */
  central: Map<number, number>;
  /** Empty when every committed sample is central exactly once and the ledger tiles every seq. */
  problems: string[];
}

/**
 * Compares the central table and ledger with the spool (the collector must be stopped and the
 * spool drained): the ledger of the spool tiles 1..next_seq-1 with no gap, its data rows are the
 * central rows, and no (series, value) pair is stored twice.
 */
export async function checkDelivery(
  pg: PgCluster,
  spoolPath: string,
  exporter: CountingExporter,
): Promise<DeliveryCheck> {
  const stats = spoolStats(spoolPath);
  const db = new DatabaseSync(spoolPath, { readOnly: true });
  const quarantineRows = db.prepare(
    "SELECT device_id, metric_id, value, labels, reason FROM quarantine ORDER BY seq",
  ).all() as {
    device_id: string;
    metric_id: string;
    value: number | null;
    labels: string;
    reason: string;
  }[];
  db.close();

  const sql = pg.admin("kwdb");
  try {
    const ledger = await sql<{ kind: string; batches: number; rows: number; seqs: number; last: number }[]>`
      SELECT kind, count(*)::int AS batches, sum(rows)::int AS rows, sum(last_seq - first_seq + 1)::int AS seqs,
             max(last_seq)::int AS last
      FROM kwollect_ledger WHERE spool_id = ${stats.spoolId} GROUP BY kind`;
    const [gaps] = await sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM kwollect_ledger_gaps WHERE spool_id = ${stats.spoolId}`;
    const perValue = await sql<{ value: number; n: number; series: number }[]>`
      SELECT value, count(*)::int AS n, count(DISTINCT (metric_id, labels))::int AS series
      FROM metrics WHERE device_id = ${EXPORTER_DEVICE} GROUP BY value ORDER BY value`;
    // The collector's own telemetry (device edge_id) is forwarded too: a duplicate there is a
    // second row of one series at one timestamp.
    const [others] = await sql<{ n: number; distinct: number }[]>`
      SELECT count(*)::int AS n, count(DISTINCT (device_id, metric_id, labels, "timestamp"))::int AS distinct
      FROM metrics WHERE device_id <> ${EXPORTER_DEVICE}`;
    const counter = await sql<{ value: number; ts: number }[]>`
      SELECT value, (extract(epoch FROM "timestamp") * 1000)::float8 AS ts
      FROM metrics WHERE device_id = ${EXPORTER_DEVICE} AND metric_id = 'prom_scrape_count'`;
    const kind = (k: string) => ledger.find((l) => l.kind === k);
    const check: DeliveryCheck = {
      served: exporter.served(),
      committedSeqs: stats.nextSeq - 1,
      spoolRowsLeft: stats.rows,
      ledgerDataRows: kind("data")?.rows ?? 0,
      ledgerBatches: kind("data")?.batches ?? 0,
      ledgerQuarantinedSeqs: kind("quarantined")?.seqs ?? 0,
      ledgerDroppedSeqs: kind("dropped")?.seqs ?? 0,
      ledgerGaps: gaps?.n ?? -1,
      ledgerLastSeq: Math.max(0, ...ledger.map((l) => l.last)),
      centralRows: perValue.reduce((n, v) => n + v.n, 0) + (others?.n ?? 0),
      telemetryRows: others?.n ?? 0,
      duplicateRows: perValue.reduce((n, v) => n + (v.n - v.series), 0) + (others ? others.n - others.distinct : 0),
      partialPolls: 0,
      quarantinedRows: quarantineRows.length,
      missingValues: [],
      quarantine: quarantineRows.map((q) => ({
        deviceId: q.device_id,
        metricId: q.metric_id,
        value: q.value ?? NaN,
        labels: JSON.parse(q.labels),
        reason: q.reason,
      })),
      central: new Map(counter.map((c) => [c.value, c.ts])),
      problems: [],
    };
    // Per poll (value): its central rows plus its quarantined rows must be all its series.
    const rowsOf = new Map<number, number>();
    for (const v of perValue) rowsOf.set(v.value, v.series);
    for (const q of quarantineRows) {
      if (q.device_id === EXPORTER_DEVICE && q.value !== null) rowsOf.set(q.value, (rowsOf.get(q.value) ?? 0) + 1);
    }
    for (let v = 1; v <= check.served; v++) {
      const n = rowsOf.get(v);
      if (n === undefined) check.missingValues.push(v);
      else if (n !== exporter.series) check.partialPolls++;
    }
    const p = check.problems;
    if (check.ledgerGaps !== 0) p.push(`kwollect_ledger_gaps shows ${check.ledgerGaps} gap(s)`);
    if (check.committedSeqs > 0 && check.ledgerLastSeq !== check.committedSeqs) {
      p.push(`the ledger ends at seq ${check.ledgerLastSeq}, the spool committed ${check.committedSeqs}`);
    }
    const tiled = check.ledgerDataRows + check.ledgerQuarantinedSeqs + check.ledgerDroppedSeqs;
    if (tiled !== check.committedSeqs) {
      p.push(`the ledger accounts for ${tiled} seqs, the spool committed ${check.committedSeqs}`);
    }
    if (check.spoolRowsLeft !== 0) p.push(`${check.spoolRowsLeft} samples left in the spool after the drain`);
    if (check.centralRows !== check.ledgerDataRows) {
      p.push(`${check.centralRows} central rows, the ledger's data batches hold ${check.ledgerDataRows}`);
    }
    if (check.duplicateRows !== 0) {
      const dups = await sql<{ metric_id: string; labels: unknown; value: number; n: number }[]>`
        SELECT metric_id, labels, value, count(*)::int AS n FROM metrics WHERE device_id = ${EXPORTER_DEVICE}
        GROUP BY metric_id, labels, value HAVING count(*) > 1 ORDER BY value LIMIT 5`;
      p.push(`${check.duplicateRows} duplicated rows in the central table, e.g. ${JSON.stringify(dups)}`);
    }
    if (check.partialPolls !== 0) {
      const partial = [...rowsOf].filter(([, n]) => n !== exporter.series).slice(0, 5);
      p.push(
        `${check.partialPolls} polls not delivered whole (value, series central + quarantined): ${
          JSON.stringify(partial)
        }`,
      );
    }
    if (check.ledgerQuarantinedSeqs !== check.quarantinedRows) {
      p.push(`${check.quarantinedRows} quarantined samples, ${check.ledgerQuarantinedSeqs} in the ledger`);
    }
    if (check.ledgerDroppedSeqs !== 0) p.push(`${check.ledgerDroppedSeqs} seqs dropped (the spool was never full)`);
    return check;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** The statistics of a spool no writer holds (its id, next seq, rows left). */
export function spoolStats(spoolPath: string): SpoolStats {
  const spool = openSpoolView(spoolPath);
  try {
    return spool.view.stats();
  } finally {
    spool.close();
  }
}

/** The delivery counts of a scenario result. */
export function deliveryCounts(c: DeliveryCheck): Record<string, number> {
  return {
    served: c.served,
    committed: c.committedSeqs,
    central: c.centralRows,
    telemetryRows: c.telemetryRows,
    batches: c.ledgerBatches,
    duplicates: c.duplicateRows,
    ledgerGaps: c.ledgerGaps,
    quarantined: c.quarantinedRows,
    neverSpooled: c.missingValues.length,
  };
}
