/**
 * A small filesystem for disk-full tests: a tmpfs of `sizeBytes` mounted by the test (root) on
 * a temporary directory, a filler that takes every free byte, and the unmount. Nothing outside
 * the mount point is touched.
 */
export interface SmallFs {
  dir: string;
  /** Writes a filler file until the filesystem is full. */
  fill(): void;
  /** Removes the filler: the space is back. */
  free(): void;
  close(): Promise<void>;
}

export async function mountSmallFs(sizeBytes: number): Promise<SmallFs> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-smallfs-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${sizeBytes},mode=0700`, "tmpfs", dir],
    stderr: "piped",
  }).output();
  if (!mount.success) throw new Error(`Cannot mount a tmpfs on ${dir}: ${new TextDecoder().decode(mount.stderr)}`);
  const filler = `${dir}/filler`;
  return {
    dir,
    fill() {
      const f = Deno.openSync(filler, { create: true, append: true });
      const block = new Uint8Array(64 * 1024);
      try {
        for (;;) f.writeSync(block);
      } catch (err) {
        if (!(err instanceof Error) || !/No space left/.test(err.message)) throw err;
      }
      // The last partial block: byte by byte until nothing fits.
      try {
        for (;;) f.writeSync(new Uint8Array(512));
      } catch { /* full */ }
      f.close();
    },
    free() {
      Deno.removeSync(filler);
    },
    async close() {
      await new Deno.Command("umount", { args: ["-l", dir] }).output();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
