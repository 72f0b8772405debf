/**
 * The local state kept next to the samples (src/spool/local_state.ts): what `status` reads of
 * each device is what the collector last recorded, written only when it changed, and without a
 * sync of its own (the samples' commits keep theirs).
 */
import assert from "node:assert/strict";
import type { DeviceStatus } from "../../src/spool/local_state.ts";
import { open, tempSpoolPath } from "./fixtures/spool.ts";
import { syncsOf } from "./fixtures/sync_trace.ts";

function device(key: string, lastPollAtMs: number, lastError?: string): DeviceStatus {
  return {
    key,
    deviceId: key,
    lastPollAtMs,
    lastOkAtMs: lastPollAtMs,
    lastError,
    pollsOk: 1,
    pollsFailed: 0,
    pollsSkipped: 0,
  };
}

Deno.test("device states are written when they change, and a new run's first write drops devices gone from its configuration", async () => {
  const path = await tempSpoolPath();
  const first = open(path);
  first.state.writeDeviceStatus([device("a", 1), device("gone", 1)]);
  first.close();
  const spool = open(path);
  const a = device("a", 2);
  const b = device("b", 2);
  spool.state.writeDeviceStatus([a, b]);
  assert.deepEqual(spool.state.deviceStatus().map((d) => [d.key, d.lastPollAtMs]), [["a", 2], ["b", 2]]);
  // The same objects, changed in place (as the scheduler keeps them): only b changed.
  b.lastPollAtMs = 3;
  b.lastError = "Poll of b timed out";
  spool.state.writeDeviceStatus([a, b]);
  assert.deepEqual(spool.state.deviceStatus().map((d) => [d.key, d.lastPollAtMs, d.lastError ?? null]), [
    ["a", 2, null],
    ["b", 3, "Poll of b timed out"],
  ]);
  spool.close();
});

Deno.test("device states are committed without an fsync of their own, and the sample commits after them still sync", async () => {
  const syncs = await syncsOf("status");
  assert.equal(syncs.unsynced, 0, "five device state writes");
  assert.ok(syncs.samples >= 3, `three sample commits synced ${syncs.samples} times`);
});
