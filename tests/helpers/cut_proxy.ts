/**
 * A TCP proxy between a client and PostgreSQL that can lose an acknowledgement: when armed, it
 * watches the server's replies for the CommandComplete message of a COMMIT and, instead of
 * relaying it, drops both connections. The server has committed; the client never hears so.
 */
export interface CutProxy {
  port: number;
  /** Cut the next connection that sees a COMMIT complete. */
  armCommitCut(): void;
  cuts(): number;
  close(): Promise<void>;
}

const COMMIT_COMPLETE = new Uint8Array([0x43, 0, 0, 0, 11, ...new TextEncoder().encode("COMMIT"), 0]);

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

export function startCutProxy(targetPort: number): CutProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let armed = false;
  let cuts = 0;
  const conns = new Set<Deno.Conn>();
  const pump = async (from: Deno.Conn, to: Deno.Conn, watch: boolean) => {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        const chunk = buf.subarray(0, n);
        if (watch && armed && contains(chunk, COMMIT_COMPLETE)) {
          armed = false;
          cuts++;
          from.close();
          to.close();
          return;
        }
        let off = 0;
        while (off < chunk.length) off += await to.write(chunk.subarray(off));
      }
    } catch { /* a side closed */ }
    try {
      to.close();
    } catch { /* already closed */ }
  };
  (async () => {
    for await (const client of listener) {
      try {
        const server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        conns.add(client).add(server);
        pump(client, server, false);
        pump(server, client, true);
      } catch {
        client.close();
      }
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    armCommitCut: () => {
      armed = true;
    },
    cuts: () => cuts,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      return Promise.resolve();
    },
  };
}
