import type { PGlite } from "@electric-sql/pglite";

/**
 * Serves one PGlite database to several PostgreSQL clients over TCP on 127.0.0.1.
 *
 * PGlite is a single session, so clients must take turns. pglite-socket's server interleaves
 * the clients' messages one by one, which is not safe: another client's message can land
 * between a Bind and its Execute (seen as `portal "" does not exist`, or worse, a statement run
 * with another client's parameters). Here a client takes the database from its first message to
 * the end of its extended-query sequence (Sync) or simple Query, and keeps it while it has a
 * transaction open. When a client disconnects while it has the database, its pending sequence is
 * ended (Sync) and its transaction rolled back. COPY FROM STDIN is not served (the collector's
 * `forward_method: insert` avoids it).
 */
export interface PgliteServer {
  port: number;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSS_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
/** Messages after which the client waits for the answer before it sends more. */
const EXCHANGE_END = new Set(["S", "Q", "H"]);
/** Messages that end a sequence: the database is in a clean state between clients after them. */
const SEQUENCE_END = new Set(["S", "Q"]);
const SYNC = new Uint8Array([0x53, 0, 0, 0, 4]);

export function servePglite(db: PGlite): PgliteServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const turn = new Turn();
  const sessions = new Set<Promise<void>>();
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const session = serveClient(db, conn, turn).catch(() => {}).finally(() => {
          conns.delete(conn);
          sessions.delete(session);
          try {
            conn.close();
          } catch {
            // Already closed.
          }
        });
        sessions.add(session);
      }
    } catch {
      // The listener was closed.
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      await accepting;
      await Promise.allSettled([...sessions]);
    },
  };
}

async function serveClient(db: PGlite, conn: Deno.Conn, turn: Turn): Promise<void> {
  const reader = new MessageReader(conn);
  let writing: Promise<void> = Promise.resolve();
  const send = (bytes: Uint8Array) => {
    writing = writing.then(() => writeAll(conn, bytes));
  };
  const exchange = async (messages: Uint8Array[], endsSequence: boolean) => {
    await turn.take(conn);
    for (const m of messages) {
      await db.runExclusive(() => db.execProtocolRawStream(m, { onRawData: (data) => send(data.slice()) }));
    }
    await writing;
    if (endsSequence && !db.isInTransaction()) turn.release(conn);
  };
  try {
    // Startup: refuse encryption, then hand the startup packet to PGlite.
    for (;;) {
      const packet = await reader.startupPacket();
      if (!packet) return;
      const code = new DataView(packet.buffer, packet.byteOffset).getInt32(4);
      if (code === SSL_REQUEST || code === GSS_REQUEST) {
        send(new TextEncoder().encode("N"));
        continue;
      }
      if (code === CANCEL_REQUEST) return;
      await exchange([packet], true);
      break;
    }
    const pending: Uint8Array[] = [];
    for (;;) {
      const message = await reader.message();
      if (!message || typeOf(message) === "X") return;
      pending.push(message);
      if (EXCHANGE_END.has(typeOf(message))) await exchange(pending.splice(0), SEQUENCE_END.has(typeOf(message)));
    }
  } finally {
    if (turn.heldBy(conn)) {
      await db.runExclusive(() => db.execProtocolRawStream(SYNC, { onRawData: () => {} })).catch(() => {});
      // exec() takes PGlite's query lock itself: calling it inside runExclusive() would deadlock.
      if (db.isInTransaction()) await db.exec("ROLLBACK").catch(() => {});
      turn.release(conn);
    }
    await writing.catch(() => {});
  }
}

function typeOf(message: Uint8Array): string {
  return String.fromCharCode(message[0]!);
}

/** Which client has the database; the others wait in arrival order. */
class Turn {
  #owner: Deno.Conn | undefined;
  #waiting: { conn: Deno.Conn; resolve: () => void }[] = [];

  take(conn: Deno.Conn): Promise<void> {
    if (this.#owner === undefined || this.#owner === conn) {
      this.#owner = conn;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push({ conn, resolve }));
  }

  heldBy(conn: Deno.Conn): boolean {
    return this.#owner === conn;
  }

  release(conn: Deno.Conn): void {
    if (this.#owner !== conn) return;
    const next = this.#waiting.shift();
    this.#owner = next?.conn;
    next?.resolve();
  }
}

/** Splits the client's byte stream into protocol messages. */
class MessageReader {
  #conn: Deno.Conn;
  #buffer = new Uint8Array(0);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** A startup-phase packet: int32 length (itself included), then the payload. */
  async startupPacket(): Promise<Uint8Array | undefined> {
    if (!(await this.#fill(8))) return undefined;
    return this.#take(this.#int32(0));
  }

  /** A regular message: type byte, int32 length (itself included), then the payload. */
  async message(): Promise<Uint8Array | undefined> {
    if (!(await this.#fill(5))) return undefined;
    return this.#take(1 + this.#int32(1));
  }

  async #take(length: number): Promise<Uint8Array | undefined> {
    if (!(await this.#fill(length))) return undefined;
    const out = this.#buffer.slice(0, length);
    this.#buffer = this.#buffer.slice(length);
    return out;
  }

  #int32(offset: number): number {
    return new DataView(this.#buffer.buffer, this.#buffer.byteOffset).getInt32(offset);
  }

  async #fill(length: number): Promise<boolean> {
    while (this.#buffer.length < length) {
      const chunk = new Uint8Array(64 * 1024);
      const n = await this.#conn.read(chunk);
      if (n === null) return false;
      const joined = new Uint8Array(this.#buffer.length + n);
      joined.set(this.#buffer);
      joined.set(chunk.subarray(0, n), this.#buffer.length);
      this.#buffer = joined;
    }
    return true;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}
