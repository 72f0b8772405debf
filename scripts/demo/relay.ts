/**
 * A TCP relay between the collector and the central database, so that the demo can cut the link
 * the same way for the embedded database and for a real PostgreSQL it does not own: `cut()`
 * resets every open connection and refuses new ones, as a network outage or a stopped server
 * would; `restore()` listens again on the same port.
 */
export interface Relay {
  port: number;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export function startRelay(upstream: { host: string; port: number }): Relay {
  const port = freePort();
  const open = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  let listener: Deno.Listener | undefined;
  let accepting: Promise<void> = Promise.resolve();

  const pipe = async (client: Deno.Conn) => {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: upstream.host, port: upstream.port });
    } catch {
      client.close();
      return;
    }
    open.add(client).add(server);
    const closeBoth = () => {
      for (const c of [client, server]) {
        if (open.delete(c)) c.close();
      }
    };
    await Promise.allSettled([
      client.readable.pipeTo(server.writable, { preventClose: true }),
      server.readable.pipeTo(client.writable, { preventClose: true }),
    ].map((p) => p.finally(closeBoth)));
  };

  const listen = () => {
    const l = Deno.listen({ hostname: "127.0.0.1", port });
    listener = l;
    accepting = (async () => {
      try {
        for await (const conn of l) {
          const pump = pipe(conn);
          pumps.add(pump);
          pump.finally(() => pumps.delete(pump));
        }
      } catch {
        // The listener was closed by cut() or close().
      }
    })();
  };

  const cut = () => {
    listener?.close();
    listener = undefined;
    for (const c of open) c.close();
    open.clear();
  };

  listen();
  return {
    port,
    cut,
    restore: () => {
      if (!listener) listen();
    },
    async close() {
      cut();
      await accepting;
      await Promise.allSettled([...pumps]);
    },
  };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
