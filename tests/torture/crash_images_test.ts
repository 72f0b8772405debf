import { ciSize } from "../../scripts/torture/scenario.ts";
import assert from "node:assert/strict";
import { runCrashImages } from "../../scripts/torture/crash_images.ts";

Deno.test("spool images taken mid-write, torn, without WAL or with a flipped bit always open and keep what is intact", async () => {
  const result = await runCrashImages(ciSize("crash-images"));
  assert.ok(result.passed, JSON.stringify(result.counts, null, 2) + "\n" + result.notes.join("\n"));
});
