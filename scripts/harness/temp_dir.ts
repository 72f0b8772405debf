/**
 * Temporary directories of a test module or a script, removed when it ends (its `unload` event),
 * with whatever was left in them: spools still open, files a child process wrote. A directory
 * its test already removed is skipped.
 */
const made: string[] = [];

/** A new directory under the system's temporary directory, named `<prefix><random>`. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  if (made.push(dir) === 1) globalThis.addEventListener("unload", removeAll);
  return dir;
}

function removeAll(): void {
  for (const dir of made.splice(0)) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
}
