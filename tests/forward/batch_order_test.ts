/**
 * The order of a batch's COPY rows (src/forward/batch_writer.ts `encodeBySeries`): rows read
 * from the spool go out grouped by series, each series' rows in seq order, and every row of the
 * batch exactly once.
 */
import assert from "node:assert/strict";
import { encodeBySeries } from "../../src/forward/batch_writer.ts";
import { copyRow } from "../../src/forward/copy_text.ts";
import type { SpooledRows } from "../../src/spool/spool.ts";
import { open, samples, tempSpoolPath } from "../spool/fixtures/spool.ts";

/** The COPY rows of `batch` as `encodeBySeries` writes them, one string per row. */
function encodedRows(batch: SpooledRows): string[] {
  const text = encodeBySeries(batch).map((chunk) => new TextDecoder().decode(chunk)).join("");
  return text.split("\n").slice(0, -1).map((row) => `${row}\n`);
}

Deno.test("a batch read from the spool is written grouped by series, each series' rows in seq order", async () => {
  const spool = open(await tempSpoolPath());
  try {
    // 7 series interleaved as a poll writes them: one row of each, then the next poll.
    await spool.writer.append(samples(700, 0, 7));
    const batch = spool.lease.readRows(0, 700);
    assert.equal(batch.length, 700);
    const rows = encodedRows(batch);
    const bySeries = new Map<number, string[]>();
    for (const s of batch.samples()) {
      const id = s.spooledSeries!.id;
      bySeries.set(id, [...bySeries.get(id) ?? [], copyRow(s)]);
    }
    const expected = [...bySeries.keys()].sort((a, b) => a - b).flatMap((id) => bySeries.get(id)!);
    assert.equal(bySeries.size, 7);
    assert.deepEqual(rows, expected);
  } finally {
    spool.close();
  }
});
