/**
 * A TCP relay on 127.0.0.1 whose target can be switched: the same host:port then answers with
 * another server (a BMC whose certificate was replaced, or an impostor). Switching closes the
 * relayed connections, as a BMC reboot would. Counts the connections it relayed to each target.
 */
export interface TcpRelay {
  port: number;
  /** Sends new connections to `port` and closes the current ones. */
  switchTo(port: number): void;
  /** Connections relayed to `port` so far. */
  connectionsTo(port: number): number;
  close(): Promise<void>;
}

export function startTcpRelay(targetPort: number): TcpRelay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let target = targetPort;
  const counts = new Map<number, number>();
  const open = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  const closeAll = () => {
    for (const c of open) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    open.clear();
  };
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    try {
      await from.readable.pipeTo(to.writable, { preventClose: true });
    } catch { /* a side closed */ }
    for (const c of [from, to]) {
      if (!open.delete(c)) continue;
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      const port = target;
      try {
        const server = await Deno.connect({ hostname: "127.0.0.1", port });
        counts.set(port, (counts.get(port) ?? 0) + 1);
        open.add(client).add(server);
        for (const p of [pump(client, server), pump(server, client)]) {
          pumps.add(p);
          p.finally(() => pumps.delete(p));
        }
      } catch {
        client.close();
      }
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    switchTo(port) {
      target = port;
      closeAll();
    },
    connectionsTo: (port) => counts.get(port) ?? 0,
    async close() {
      listener.close();
      closeAll();
      await accepting;
      await Promise.allSettled([...pumps]);
    },
  };
}
