import snmp from "net-snmp";
import { logger } from "../../log.ts";
import { installPrivacyCiphers } from "./privacy.ts";
import { installFastAssertOk } from "./ber_assert.ts";
import type { SnmpTarget } from "./url.ts";
import type { Varbind } from "./value.ts";
import { AgentStatusError } from "./agent_status.ts";
import { sharedDgram } from "./shared_socket.ts";

/**
 * A promise-based net-snmp session to one agent, on a UDP socket shared with other sessions
 * (shared_socket.ts), reused across polls until it is closed. Aborting a request closes the
 * session (net-snmp then fails every outstanding request with "Socket forcibly closed"); the
 * owner opens a new one for the next poll.
 *
 * The socket is bound to the loopback address when the agent is on loopback, so that a Deno
 * permission limited to 127.0.0.1 is enough (net-snmp otherwise binds 0.0.0.0:0, which
 * `--allow-net=127.0.0.1` refuses); other agents use the wildcard address as usual.
 */

installPrivacyCiphers();
installFastAssertOk();

const MAX_WALK_VARBINDS = 10_000;
const WALK_REPETITIONS = 20;

export interface SessionOptions {
  /** Time to wait for each answer before re-sending. */
  requestTimeoutMs: number;
  retries: number;
}

export class SnmpSession {
  // deno-lint-ignore no-explicit-any
  #session: any;
  #closed = false;
  #endpoint: string;
  #opts: SessionOptions;
  #lastSocketError: string | undefined;

  constructor(target: SnmpTarget, opts: SessionOptions) {
    this.#opts = opts;
    this.#endpoint = `${target.host}:${target.port}`;
    const ipv6 = target.host.includes(":");
    const options = {
      port: target.port,
      timeout: opts.requestTimeoutMs,
      retries: opts.retries,
      transport: ipv6 ? "udp6" : "udp4",
      sourceAddress: loopbackSource(target.host),
      dgramModule: sharedDgram,
      version: target.version === "1" ? snmp.Version1 : target.version === "2c" ? snmp.Version2c : snmp.Version3,
    };
    this.#session = target.user
      ? snmp.createV3Session(target.host, v3User(target.user), options)
      : snmp.createSession(target.host, target.community, options);
    // net-snmp emits "error" for an undecodable datagram; without a listener that would throw.
    this.#session.on("error", (err: Error) => {
      if (err.message === this.#lastSocketError) return;
      this.#lastSocketError = err.message;
      logger.warning("Undecodable SNMP message ignored", { agent: this.#endpoint, error: err.message });
    });
    this.#session.on("close", () => {
      this.#closed = true;
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** GETs `oids`; the varbinds come back in request order. */
  get(oids: readonly string[], signal: AbortSignal): Promise<Varbind[]> {
    return this.#request(signal, (done) => this.#session.get(oids, done));
  }

  /** Every varbind under `prefix` (GETBULK for v2c/v3, GETNEXT for v1), up to 10,000. */
  walk(prefix: string, signal: AbortSignal): Promise<Varbind[]> {
    const found: Varbind[] = [];
    return this.#request(signal, (done) =>
      this.#session.subtree(
        prefix,
        WALK_REPETITIONS,
        (vbs: Varbind[]) => {
          found.push(...vbs);
          return found.length >= MAX_WALK_VARBINDS;
        },
        (err: Error | null) => done(err, found),
      ));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#session.close();
    } catch {
      // Already closed by the socket itself.
    }
  }

  #request(signal: AbortSignal, send: (done: (err: Error | null, vbs?: Varbind[]) => void) => void) {
    return new Promise<Varbind[]>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      if (this.#closed) return reject(new Error(`SNMP session to ${this.#endpoint} is closed`));
      const onAbort = () => {
        this.close();
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const done = (err: Error | null, vbs?: Varbind[]) => {
        signal.removeEventListener("abort", onAbort);
        if (err) reject(this.#describe(err));
        else resolve(vbs ?? []);
      };
      try {
        send(done);
      } catch (err) {
        done(err as Error);
      }
    });
  }

  #describe(err: Error): Error {
    if (err.name === "RequestTimedOutError") {
      const tries = this.#opts.retries + 1;
      return new Error(
        `No answer from SNMP agent ${this.#endpoint} (${tries} ${
          tries === 1 ? "try" : "tries"
        } of ${this.#opts.requestTimeoutMs} ms)`,
      );
    }
    if (err.name === "RequestFailedError") {
      const status = (err as Error & { status?: number }).status ?? 0;
      // net-snmp's message is "<StatusName>" or "<StatusName>: <oid of the error-index>".
      const oid = /: ([0-9.]+)$/.exec(err.message)?.[1];
      return new AgentStatusError(`SNMP agent ${this.#endpoint} answered ${err.message}`, status, oid);
    }
    return new Error(`SNMP request to ${this.#endpoint} failed: ${err.message}`);
  }
}

function loopbackSource(host: string): string | undefined {
  if (host === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(host)) return "127.0.0.1";
  if (host === "::1") return "::1";
  return undefined;
}

function v3User(user: NonNullable<SnmpTarget["user"]>): Record<string, unknown> {
  return {
    name: user.name,
    level: snmp.SecurityLevel[user.level],
    ...(user.auth && { authProtocol: snmp.AuthProtocols[user.auth.protocol], authKey: user.auth.password }),
    ...(user.priv && { privProtocol: snmp.PrivProtocols[user.priv.protocol], privKey: user.priv.password }),
  };
}
