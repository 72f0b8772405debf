/**
 * The local state kept next to the samples (src/spool/local_state.ts): what `status` reads of
 * each device is what the collector last recorded, written only when it changed, and without a
 * sync of its own (the samples' commits keep theirs).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { DeviceStatus } from "../../src/spool/local_state.ts";
import { open, tempSpoolPath } from "./fixtures/spool.ts";

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
  const dir = await Deno.makeTempDir({ prefix: "kwollector-status-sync-" });
  try {
    const trace = `${dir}/trace.txt`;
    const child = fileURLToPath(new URL("./fixtures/status_then_samples.ts", import.meta.url));
    const out = await new Deno.Command("strace", {
      args: [
        "-f",
        "-e",
        "trace=fsync,fdatasync,statx,newfstatat,stat",
        "-o",
        trace,
        Deno.execPath(),
        "run",
        "-A",
        child,
        `${dir}/spool.db`,
        dir,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const lines = (await Deno.readTextFile(trace)).split("\n");
    const at = (marker: string) => {
      const i = lines.findIndex((l) => l.includes(`${dir}/${marker}`));
      assert.ok(i >= 0, `marker ${marker} not in the trace`);
      return i;
    };
    const syncs = (from: number, to: number) =>
      lines.slice(from, to).filter((l) => /\b(fsync|fdatasync)\(/.test(l)).length;
    const [status, samples, end] = [at("status-begin"), at("samples-begin"), at("end")];
    assert.equal(syncs(status, samples), 0, "five device state writes");
    assert.ok(syncs(samples, end) >= 3, `three sample commits synced ${syncs(samples, end)} times`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
