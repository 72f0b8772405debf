import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runDiskFull } from "../../scripts/torture/disk_full.ts";

Deno.test("collector survives a full spool disk, logs it once, resumes by itself and loses only what it counts", async () => {
  const result = await runDiskFull(ciSize("disk-full"));
  assert.ok(result.passed, JSON.stringify(result.counts, null, 2) + "\n" + result.notes.join("\n"));
});
