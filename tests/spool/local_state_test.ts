/**
 * The local state kept next to the samples (src/spool/local_state.ts): what `status` reads of
 * each device is what the collector last recorded, written only when it changed, and without a
 * sync of its own (the samples' commits keep theirs).
 */
import assert from "node:assert/strict";
import { DEVICE_STATES_PER_WRITE, type DeviceStatus } from "../../src/spool/local_state.ts";
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

Deno.test("one write stores at most DEVICE_STATES_PER_WRITE device states, and the next writes take the others in turn", async () => {
  const path = await tempSpoolPath();
  const spool = open(path);
  const n = 2 * DEVICE_STATES_PER_WRITE + DEVICE_STATES_PER_WRITE / 2;
  const devices = Array.from({ length: n }, (_, i) => device(`d${String(i).padStart(5, "0")}`, 1));
  const stored = () => new Map(spool.state.deviceStatus().map((d) => [d.key, d.lastPollAtMs]));
  spool.state.writeDeviceStatus(devices);
  assert.equal(stored().size, DEVICE_STATES_PER_WRITE);
  spool.state.writeDeviceStatus(devices);
  spool.state.writeDeviceStatus(devices);
  assert.equal(stored().size, n, "three writes store them all");
  // A write's worth of devices changing at every write (polled faster) does not keep the
  // others' changes out.
  const fast = devices.slice(0, DEVICE_STATES_PER_WRITE);
  const slow = devices.slice(DEVICE_STATES_PER_WRITE);
  for (const d of slow) d.lastPollAtMs = 2;
  for (let write = 0; write < 3; write++) {
    for (const d of fast) d.lastPollAtMs = 3 + write;
    spool.state.writeDeviceStatus(devices);
  }
  const after = stored();
  assert.deepEqual(slow.filter((d) => after.get(d.key) !== 2).map((d) => d.key), []);
  // The last write, at stop, stores every change at once.
  for (const d of devices) d.lastPollAtMs = 9;
  spool.state.writeDeviceStatus(devices, Infinity);
  assert.deepEqual([...new Set(stored().values())], [9]);
  spool.close();
});

Deno.test("device states are committed without an fsync of their own, and the sample commits after them still sync", async () => {
  const syncs = await syncsOf("status");
  assert.equal(syncs.unsynced, 0, "five device state writes");
  assert.ok(syncs.samples >= 3, `three sample commits synced ${syncs.samples} times`);
});
