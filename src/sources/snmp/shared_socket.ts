import dgram from "node:dgram";
import dns from "node:dns";
import { EventEmitter } from "node:events";
import net from "node:net";
import { requestIdOf } from "./request_id.ts";

/**
 * UDP sockets shared by the SNMP sessions of the process, handed to net-snmp as its
 * `dgramModule`: a session gets a `SessionSocket`, which looks like a node:dgram socket to
 * net-snmp but sends and receives through a real socket shared with up to 127 other sessions.
 *
 * Why: under Deno, every node:dgram socket keeps a receive pending with a 64 KiB buffer of its
 * own, and a datagram costs more to receive the more sockets are open; a collector polling 1,000
 * agents held 1,000 sockets (docs/PERFORMANCE.md, `snmp4`).
 *
 * Guarantees:
 * - An answer reaches the session that sent to the address and port it comes from (the address
 *   a host name resolved to, IPv6 compared in canonical form). When several did (one agent, other
 *   credentials), or none did (an agent answering from another of its addresses), it reaches
 *   each of them whose last `RECENT_IDS` requests hold its request id (request_id.ts), and every
 *   one of them when none does, as the session's own socket received it before: net-snmp drops
 *   an answer to no request it has outstanding. Each, not the first: net-snmp draws request ids
 *   at random below 10^8, so two sessions' recent requests share an id now and then (eight busy
 *   sessions of one agent, 64 recent ids each: about once in 200,000 answers), and an answer
 *   given only to the session that sent the id earlier left the one waiting for it to time out.
 * - A real socket serves at most `SESSIONS_PER_SOCKET` sessions (of one transport and source
 *   address), so that while the main thread is busy, each kernel receive queue (208 KiB by
 *   default) holds the answers of a share of the agents, not of all of them.
 * - A real socket is closed when its last session closes, and is never kept referenced (keeping
 *   the process alive) when none of its sessions waits for an answer.
 * - Closing a `SessionSocket` emits "close" on it (net-snmp then fails its outstanding requests);
 *   a real socket that fails or closes under its sessions closes every one of them, and the next
 *   session gets a new socket.
 */

const SESSIONS_PER_SOCKET = 128;
const RECENT_IDS = 64;

type Transport = "udp4" | "udp6";
type SendCallback = (error: Error | null, bytes?: number) => void;

/** One real socket and the sessions on it, by the address:port they send to. */
class SharedSocket {
  readonly socket: dgram.Socket;
  readonly sessions = new Set<SessionSocket>();
  #routes = new Map<string, Set<SessionSocket>>();
  #referenced = 0;
  #onGone: () => void;

  constructor(transport: Transport, address: string | undefined, onGone: () => void) {
    this.#onGone = onGone;
    this.socket = dgram.createSocket(transport);
    this.socket.unref();
    this.socket.on("message", (msg, rinfo) => {
      const to = this.#routes.get(routeKey(rinfo.address, rinfo.port)) ?? this.sessions;
      if (to.size === 1) {
        for (const session of to) session.emit("message", msg, rinfo);
        return;
      }
      const id = requestIdOf(msg);
      let delivered = false;
      for (const session of to) {
        if (id === undefined || !session.sent(id)) continue;
        session.emit("message", msg, rinfo);
        delivered = true;
      }
      if (!delivered) { for (const session of to) session.emit("message", msg, rinfo); }
    });
    this.socket.on("error", (err) => {
      for (const session of this.sessions) session.emit("error", err);
    });
    this.socket.on("close", () => {
      this.#onGone();
      for (const session of [...this.sessions]) session.detached();
    });
    if (address !== undefined) this.socket.bind(0, address);
  }

  route(session: SessionSocket, key: string): void {
    let to = this.#routes.get(key);
    if (!to) this.#routes.set(key, to = new Set());
    to.add(session);
  }

  leave(session: SessionSocket, keys: Iterable<string>, referenced: boolean): void {
    for (const key of keys) {
      const to = this.#routes.get(key);
      to?.delete(session);
      if (to?.size === 0) this.#routes.delete(key);
    }
    if (referenced) this.unref();
    this.sessions.delete(session);
    if (this.sessions.size > 0) return;
    this.#onGone();
    try {
      this.socket.close();
    } catch {
      // Already closed by an error of its own.
    }
  }

  ref(): void {
    if (this.#referenced++ === 0) this.socket.ref();
  }

  unref(): void {
    if (--this.#referenced === 0) this.socket.unref();
  }
}

const pools = new Map<string, SharedSocket[]>();

function attach(transport: Transport, address: string | undefined, session: SessionSocket): SharedSocket {
  const poolKey = `${transport} ${address ?? "*"}`;
  let pool = pools.get(poolKey);
  if (!pool) pools.set(poolKey, pool = []);
  const list = pool;
  let shared = list.find((s) => s.sessions.size < SESSIONS_PER_SOCKET);
  if (!shared) {
    const created: SharedSocket = new SharedSocket(transport, address, () => {
      const at = list.indexOf(created);
      if (at >= 0) list.splice(at, 1);
      if (list.length === 0 && pools.get(poolKey) === list) pools.delete(poolKey);
    });
    list.push(created);
    shared = created;
  }
  shared.sessions.add(session);
  return shared;
}

/** What net-snmp's Session uses of a node:dgram socket. */
export class SessionSocket extends EventEmitter {
  #transport: Transport;
  #shared: SharedSocket | undefined;
  #routes = new Set<string>();
  #referenced = false;
  #closed = false;
  #recentIds: number[] = [];
  #nextId = 0;

  constructor(transport: Transport) {
    super();
    this.#transport = transport;
  }

  /** Chooses the source address; the port is the shared socket's (net-snmp asks for none). */
  bind(port: number | undefined, address: string | undefined): void {
    if (port) throw new Error(`Cannot share an SNMP socket bound to port ${port}`);
    if (this.#closed || this.#shared) return;
    this.#shared = attach(this.#transport, address, this);
  }

  send(
    buffer: Uint8Array,
    offset: number,
    length: number,
    port: number,
    host: string,
    callback: SendCallback,
  ): void {
    if (this.#closed) {
      queueMicrotask(() => callback(new Error("Not running")));
      return;
    }
    const shared = this.#shared ??= attach(this.#transport, undefined, this);
    const id = requestIdOf(buffer.subarray(offset, offset + length));
    if (id !== undefined) {
      this.#recentIds[this.#nextId] = id;
      this.#nextId = (this.#nextId + 1) % RECENT_IDS;
    }
    const deliver = (address: string) => {
      const key = routeKey(address, port);
      if (!this.#routes.has(key)) {
        this.#routes.add(key);
        shared.route(this, key);
      }
      shared.socket.send(buffer, offset, length, port, address, callback);
    };
    if (net.isIP(host) !== 0) return deliver(host);
    dns.lookup(host, this.#transport === "udp6" ? 6 : 4, (err, address) => {
      if (err) callback(err);
      else if (this.#closed) callback(new Error("Not running"));
      else deliver(address);
    });
  }

  /** Whether `id` is the request id of one of this session's last `RECENT_IDS` messages. */
  sent(id: number): boolean {
    return this.#recentIds.includes(id);
  }

  ref(): this {
    if (!this.#referenced && this.#shared && !this.#closed) {
      this.#referenced = true;
      this.#shared.ref();
    }
    return this;
  }

  unref(): this {
    if (this.#referenced) {
      this.#referenced = false;
      this.#shared?.unref();
    }
    return this;
  }

  close(): void {
    if (this.#closed) return;
    const referenced = this.#referenced;
    this.#referenced = false;
    this.#shared?.leave(this, this.#routes, referenced);
    this.detached();
  }

  /** The real socket is gone (closed by this session or under it). */
  detached(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#shared = undefined;
    this.#routes.clear();
    queueMicrotask(() => this.emit("close"));
  }
}

/** net-snmp's `dgramModule` option. */
export const sharedDgram = {
  createSocket: (transport: Transport) => new SessionSocket(transport),
};

function routeKey(address: string, port: number): string {
  return `${canonical(address)}|${port}`;
}

function canonical(address: string): string {
  if (!address.includes(":")) return address;
  return new URL(`http://[${address.replace(/%.*$/, "")}]`).hostname.slice(1, -1);
}
