/**
 * Writes to a spool as the collector does, until killed, for crash_images.ts: group commits of
 * 1 to 100 samples whose value is the seq they get, and every so often the removal of the oldest
 * rows (as after a forward), so the database has free pages, checkpoints and reused WAL space.
 *
 * It prints `acked N` once the commit that holds seq N is durable, and `removing A B` before it
 * removes seqs A..B (so the test knows those may be gone from any later image).
 *
 * Usage: deno run -A crash_writer.ts PATH SEED
 */
import { openSpool } from "../../src/spool/spool.ts";
import type { Sample } from "../../src/sample.ts";
import { prng } from "./scenario.ts";

const KEEP_ROWS = 20_000;
const REMOVE_ROWS = 5_000;

const [path, seed] = Deno.args;
const rand = prng(Number(seed));
const { writer, lease } = openSpool({
  path: path!,
  maxBytes: 1024 ** 3,
  fullPolicy: "drop_oldest",
  synchronous: "full",
  commitIntervalMs: 3,
});
const out = (line: string) => {
  const bytes = new TextEncoder().encode(line + "\n");
  for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
};
let next = lease.lastSeq() + 1;
let oldest = next;
for (;;) {
  const n = 1 + Math.floor(rand() * 100);
  const batch: Sample[] = [];
  for (let i = 0; i < n; i++) {
    const seq = next + i;
    batch.push({
      timestampMs: Date.now() + i / 1000,
      deviceId: `node-${seq % 13}`,
      metricId: seq % 3 === 0 ? "power_watt" : "prom_node_load1",
      value: seq,
      labels: seq % 7 === 0 ? { value_str: "on", _device_alias: `n${seq % 13}` } : { _device_alias: `n${seq % 13}` },
    });
  }
  await writer.append(batch);
  next += n;
  out(`acked ${lease.lastSeq()}`);
  if (next - oldest > KEEP_ROWS) {
    out(`removing ${oldest} ${oldest + REMOVE_ROWS - 1}`);
    lease.removeForwarded(oldest, oldest + REMOVE_ROWS - 1);
    oldest += REMOVE_ROWS;
  }
}
