/**
 * The link cutter of tests, benchmarks and the demo: a TCP relay on 127.0.0.1 between a client
 * (the collector) and a server, that breaks the link the ways a network and its peers do:
 * - `cut()` resets every relayed connection and refuses new ones, as an outage or a stopped
 *   server would; `restore()` listens again on the same port;
 * - `switchTo(port)` sends new connections to another server and closes the current ones, as a
 *   BMC replaced behind the same address (or an impostor) would;
 * - `cutWhenServerSends(bytes)` drops the next connection whose server sends `bytes`, both sides,
 *   instead of relaying them: an acknowledgement lost after the server acted on the request.
 * It counts the connections it relayed to each server, and closes everything it opened.
 */
export interface LinkCutter {
  port: number;
  cut(): void;
  restore(): void;
  switchTo(port: number): void;
  /** Connections relayed to server `port` so far. */
  connectionsTo(port: number): number;
  cutWhenServerSends(bytes: Uint8Array): void;
  /** Connections dropped by `cutWhenServerSends` so far. */
  cuts(): number;
  close(): Promise<void>;
}

export function startLinkCutter(server: { host?: string; port: number }): LinkCutter {
  const host = server.host ?? "127.0.0.1";
  let target = server.port;
  let watched: Uint8Array | undefined;
  let cuts = 0;
  const counts = new Map<number, number>();
  const open = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  const close = (conn: Deno.Conn) => {
    if (!open.delete(conn)) return;
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  const closeAll = () => [...open].forEach(close);
  /** Copies `from` to `to`; with `watch`, drops both at the first chunk holding the watched bytes. */
  const pump = async (from: Deno.Conn, to: Deno.Conn, watch: boolean) => {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        const chunk = buf.subarray(0, n);
        if (watch && watched && contains(chunk, watched)) {
          watched = undefined;
          cuts++;
          break;
        }
        for (let off = 0; off < chunk.length;) off += await to.write(chunk.subarray(off));
      }
    } catch { /* a side closed */ }
    close(from);
    close(to);
  };
  const relay = async (client: Deno.Conn) => {
    const port = target;
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: host, port });
    } catch {
      client.close();
      return;
    }
    counts.set(port, (counts.get(port) ?? 0) + 1);
    open.add(client).add(upstream);
    await Promise.all([pump(client, upstream, false), pump(upstream, client, true)]);
  };
  let listener: Deno.Listener | undefined;
  let accepting: Promise<void> = Promise.resolve();
  const listen = (port: number) => {
    const l = Deno.listen({ hostname: "127.0.0.1", port });
    listener = l;
    accepting = (async () => {
      try {
        for await (const client of l) {
          const p = relay(client);
          pumps.add(p);
          p.finally(() => pumps.delete(p));
        }
      } catch { /* the listener was closed by cut() or close() */ }
    })();
    return (l.addr as Deno.NetAddr).port;
  };
  const port = listen(0);
  const cut = () => {
    listener?.close();
    listener = undefined;
    closeAll();
  };
  return {
    port,
    cut,
    restore() {
      if (!listener) listen(port);
    },
    switchTo(p) {
      target = p;
      closeAll();
    },
    connectionsTo: (p) => counts.get(p) ?? 0,
    cutWhenServerSends(bytes) {
      watched = bytes;
    },
    cuts: () => cuts,
    async close() {
      cut();
      await accepting;
      await Promise.allSettled([...pumps]);
    },
  };
}

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}
