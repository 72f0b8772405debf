import type { Transaction } from "./ledger.ts";

/**
 * # The fleet's backfill slots: how many backlog batches the central database takes at once
 *
 * Every collector of a site drains into one database. Left to themselves, N collectors returning
 * from an outage keep N × `forward_pipeline_batches` backfill COPYs running at once: the
 * database's cores are shared between all of them, each batch is slower, and every collector's
 * live lane (and, when the collectors share its host, the collectors themselves) waits in the
 * same queue. Measured with 20 collectors on 2 cores (docs/PERFORMANCE.md, `fleet3`), about
 * nine tenths of a live batch's time was its backend waiting for its own collector, busy with
 * its backfill, and the database did half the rows per second of one collector alone.
 *
 * So the whole fleet shares `forward_fleet_backfill_batches` slots (K), kept by the central
 * database itself as transaction-level advisory locks of the two-key form (LOCK_CLASS, 1..K): a
 * key space apart from the ledger's one-key spool locks (ledger.ts) and the schema migration's.
 * Guarantees:
 *
 * - **At most K backfill batches of the fleet are in flight at once**, whatever the number of
 *   collectors: a backfill transaction takes a free slot with its first statement, before any
 *   row, and holds it until its COMMIT or ROLLBACK.
 * - **Nothing waits on the database for a slot.** A slot is only tried
 *   (`pg_try_advisory_xact_lock`): a batch that finds none free is rolled back at once, having
 *   written nothing and claimed nothing, and is tried again later (the forwarder keeps it,
 *   encoded, until then). No backend ever queues for a slot, so a vanished collector leaves
 *   no queue behind, and the slot of a batch orphaned by a power loss is freed with its
 *   transaction (session.ts: 15 to 25 s).
 * - **Live samples never need a slot**: the live lane's batches are not counted.
 *
 * A collector alone with K ≥ `forward_pipeline_batches` is not slowed at all: its batches find
 * their slots free.
 */

/** First key of the slots' advisory locks ("kw" in ASCII); the second key is the slot, 1..K. */
export const LOCK_CLASS = 0x6b77;

/** Takes a free slot of the K for the transaction `tx`; returns false when all K are taken. */
export async function takeBackfillSlot(tx: Transaction, slots: number): Promise<boolean> {
  const rows = await tx`
    SELECT s FROM generate_series(1, ${slots}::int) AS s
    WHERE pg_try_advisory_xact_lock(${LOCK_CLASS}::int, s) LIMIT 1`;
  return rows.length > 0;
}

/** A backfill batch found every slot of the fleet taken; it wrote and claimed nothing. */
export class NoSlotError extends Error {
  constructor(slots: number) {
    super(`Every backfill slot of the fleet (${slots}) is taken`);
  }
}
