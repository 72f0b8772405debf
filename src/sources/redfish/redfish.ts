import http from "node:http";
import https from "node:https";
import type tls from "node:tls";
import { Buffer } from "node:buffer";
import type { MetricEntry } from "../../config/metrics_dir.ts";
import { errorMessage, logger, registerSecret } from "../../log.ts";
import type { RawValue } from "../../sample.ts";
import { MemoryTlsPins, type TlsPin, type TlsPins } from "../../spool/tls_pins.ts";
import { VERSION } from "../../version.ts";
import { readJsonBody } from "./json_body.ts";
import { followJsonPath, kindOf, parseJsonPath, type PathStep } from "./json_path.ts";
import type { EntryError, PollResult, Protocol, ProtocolOptions, Reading, Source, SourceContext } from "../source.ts";
import { CertificateChangedError, connectTrusted, type TlsVerify, type TrustPolicy } from "./tls_trust.ts";

/**
 * Redfish BMCs, and any JSON document over HTTP(S):
 * `https://user:password@bmc/redfish/v1/Chassis/1/Thermal#Temperatures[0].ReadingCelsius`.
 * The URL without its fragment is the document to GET; the fragment is a JSON path into it
 * (`json_path.ts`: dot keys, `[n]` and `[-1]` indexes, quoted keys).
 *
 * - One poll group per endpoint (scheme, host, port, user, password), so every document of a BMC
 *   is read through one keep-alive connection pool (at most MAX_CONNECTIONS connections), and one
 *   GET per distinct document per cycle, shared by all the entries that read it.
 * - Authentication: HTTP basic with the URL's user and password. Redfish sessions
 *   (X-Auth-Token) are not used: a BMC has few session slots and a collector killed without
 *   logging out leaks one until it expires, while keep-alive already avoids a TLS handshake per
 *   request.
 * - Failures: a path missing from a document fails that entry alone; a document that cannot be
 *   fetched (refused, TLS, non-2xx, not JSON, too large, too deep) fails its entries, and the
 *   whole poll when no document of the group could be fetched.
 * - Bounds (json_body.ts): a document is read as a stream, decompressed as it comes (the
 *   request asks for gzip, as Kwollect's HTTP client did), and refused past
 *   `redfish_max_body_bytes` bytes after decompression or past 100 levels of nesting.
 * - Values: numbers, numeric text and booleans are stored as numbers; other text is stored as
 *   NaN with `value_str` (e.g. `Status.Health` = "OK"); null, objects and arrays are entry
 *   errors.
 *
 * TLS (https URLs) is set by two configuration keys, since a URL has no room for options (its
 * fragment is the JSON path, and its query goes to the BMC):
 * - `redfish_tls_verify`: `tofu` (default) pins each BMC's certificate at its first successful
 *   poll and refuses any other afterwards (`kwollector trust` accepts a new one); `full` checks
 *   the certificate chain and that the certificate names the URL host; `ca` checks the chain
 *   only; `none` checks nothing, so the BMC password goes to whoever answers.
 * - `redfish_ca_file`: PEM file of the certificates trusted instead of the built-in roots (full,
 *   ca): a site CA, or the self-signed certificates of the BMCs themselves.
 * Every connection is opened and checked by tls_trust.ts before the first HTTP byte, so the
 * credentials are sent only after the fingerprint matched or the chain verified. Plain `http://`
 * URLs send the password in clear; they exist because Kwollect accepted them.
 *
 * The requests go through node:https with its keep-alive pool, whose connections come from
 * tls_trust.ts; its abort does not interrupt a request on a reused keep-alive socket, so an
 * abort also destroys the socket, and the handshakes still in progress.
 */

const DEFAULT_PORT: Record<string, number> = { http: 80, https: 443 };
const MAX_CONNECTIONS = 2;
const CLOSE_WAIT_MS = 1000;
/** Codes of node:tls verification failures (Deno's and Node's). */
const TLS_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

const CONFIG_KEYS = ["redfish_tls_verify", "redfish_ca_file", "redfish_max_body_bytes"] as const;
type RedfishKey = (typeof CONFIG_KEYS)[number];

export const redfish: Protocol<RedfishKey> = {
  configKeys: CONFIG_KEYS,
  validate(entry, options) {
    if (entry.target.fragment === "") {
      return `Missing JSON path after '#' in url '${displayUrl(entry)}' (e.g. #Temperatures[0].ReadingCelsius)`;
    }
    const path = parseJsonPath(entry.target.fragment);
    if ("error" in path) return `${path.error} in url '${displayUrl(entry)}'`;
    const target = requestTarget(entry);
    if (!/^[\x21-\x7e]*$/.test(target)) {
      return `Request path '${target}' of url '${
        displayUrl(entry)
      }' has spaces or non-ASCII characters: percent-encode them`;
    }
    if (entry.target.scheme === "https" && options.redfish_ca_file !== "") {
      if (options.redfish_tls_verify !== "full" && options.redfish_tls_verify !== "ca") {
        return `redfish_ca_file '${options.redfish_ca_file}' is not used under redfish_tls_verify ` +
          `'${options.redfish_tls_verify}': set redfish_tls_verify to 'full' or 'ca' to check certificates ` +
          `against it, or remove redfish_ca_file`;
      }
      const ca = readCaFile(options.redfish_ca_file);
      if ("error" in ca) return ca.error;
    }
    return undefined;
  },
  groupKey: (entry) => {
    const t = entry.target;
    return `${t.scheme}://${t.username}:${t.password}@${t.host}:${portOf(entry)}`;
  },
  endpoint: (entry) => {
    const t = entry.target;
    return `${t.username === "" ? "" : `${t.username}@`}${hostForUrl(t.host)}:${portOf(entry)}`;
  },
  create: (entries, ctx) => new RedfishSource(entries, ctx),
};

function portOf(entry: MetricEntry): number {
  return entry.target.port ?? DEFAULT_PORT[entry.target.scheme] ?? 80;
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** The path and query to GET, as written in the URL (not decoded), "/" when empty. */
function requestTarget(entry: MetricEntry): string {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*([^#]*)/s.exec(entry.url.trim());
  const target = m?.[1] ?? "";
  return target === "" ? "/" : target.startsWith("/") ? target : `/${target}`;
}

/** The URL without credentials, for messages. */
function displayUrl(entry: MetricEntry): string {
  const fragment = entry.target.fragment === "" ? "" : `#${entry.target.fragment}`;
  return `${entry.target.scheme}://${hostForUrl(entry.target.host)}:${portOf(entry)}${requestTarget(entry)}${fragment}`;
}

function readCaFile(path: string): { certs: string[] } | { error: string } {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    return { error: `Cannot open redfish_ca_file '${path}': ${(err as Error).message}` };
  }
  const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (certs.length === 0) return { error: `redfish_ca_file '${path}' holds no PEM certificate` };
  return { certs };
}

function trustPolicy(options: ProtocolOptions<RedfishKey>, pins: TlsPins): TrustPolicy {
  const ca = options.redfish_ca_file === "" ? undefined : readCaFile(options.redfish_ca_file);
  if (ca && "error" in ca) throw new Error(ca.error);
  return { verify: options.redfish_tls_verify as TlsVerify, ca: ca?.certs, pins };
}

/** node:http's hook to open a pooled connection; asynchronous when it calls back later. */
type CreateConnection = (
  options: unknown,
  callback: (err: Error | null, socket?: tls.TLSSocket) => void,
) => undefined;

class RedfishSource implements Source {
  #scheme: string;
  #host: string;
  #port: number;
  #origin: string;
  #caFile: string;
  #maxBodyBytes: number;
  #agent: http.Agent;
  #request: typeof http.request;
  #headers: Record<string, string>;
  #paths = new Map<MetricEntry, PathStep[] | { error: string }>();
  #pins: TlsPins;
  /** Connections accepted on first use (tofu), with the pin to record after a good answer. */
  #firstUse = new WeakMap<object, TlsPin>();
  /** Handshakes in progress, destroyed when a poll is aborted or the source closed. */
  #connecting = new Set<tls.TLSSocket>();

  constructor(entries: readonly MetricEntry[], ctx: SourceContext<RedfishKey>) {
    const first = entries[0]!;
    const t = first.target;
    this.#scheme = t.scheme;
    this.#host = t.host;
    this.#port = portOf(first);
    this.#origin = `${t.scheme}://${hostForUrl(t.host)}:${this.#port}`;
    this.#caFile = ctx.options.redfish_ca_file;
    this.#maxBodyBytes = ctx.options.redfish_max_body_bytes;
    this.#pins = ctx.tlsPins ?? new MemoryTlsPins();
    const pool = { keepAlive: true, maxSockets: MAX_CONNECTIONS };
    if (t.scheme === "https") {
      const policy = trustPolicy(ctx.options, this.#pins);
      this.#agent = new https.Agent(pool);
      (this.#agent as unknown as { createConnection: CreateConnection }).createConnection = (_options, callback) => {
        let started: tls.TLSSocket | undefined;
        connectTrusted(this.#host, this.#port, policy, (socket) => {
          started = socket;
          this.#connecting.add(socket);
        }).then(({ socket, firstUse }) => {
          this.#connecting.delete(socket);
          if (firstUse) this.#firstUse.set(socket, firstUse);
          callback(null, socket);
        }, (err: Error) => {
          if (started) this.#connecting.delete(started);
          // The request reports it, described with its URL.
          callback(err);
        });
        return undefined;
      };
      this.#request = https.request as typeof http.request;
    } else {
      this.#agent = new http.Agent(pool);
      this.#request = http.request;
    }
    this.#headers = {
      accept: "application/json",
      "accept-encoding": "gzip, deflate",
      "odata-version": "4.0",
      "user-agent": `kwollector/${VERSION}`,
    };
    if (t.username !== "" || t.password !== "") {
      registerSecret(t.password);
      const token = Buffer.from(`${t.username}:${t.password}`, "utf8").toString("base64");
      registerSecret(token);
      this.#headers.authorization = `Basic ${token}`;
    }
  }

  async poll(entries: readonly MetricEntry[], signal: AbortSignal): Promise<PollResult> {
    const byTarget = new Map<string, MetricEntry[]>();
    for (const e of entries) {
      const target = requestTarget(e);
      const list = byTarget.get(target);
      if (list) list.push(e);
      else byTarget.set(target, [e]);
    }
    const targets = [...byTarget.keys()];
    const docs = await Promise.allSettled(targets.map((target) => this.#getJson(target, signal)));
    signal.throwIfAborted();
    const failed = docs.filter((d) => d.status === "rejected");
    if (failed.length === docs.length) {
      const first = (failed[0] as PromiseRejectedResult).reason as Error;
      const more = failed.length > 1 ? ` (and ${failed.length - 1} more documents of this BMC failed)` : "";
      throw new Error(`${first.message}${more}`);
    }
    const readings: Reading[] = [];
    const errors: EntryError[] = [];
    targets.forEach((target, n) => {
      const doc = docs[n]!;
      for (const entry of byTarget.get(target)!) {
        if (doc.status === "rejected") {
          errors.push({ entry, message: (doc.reason as Error).message });
          continue;
        }
        const read = this.#read(entry, doc.value);
        if ("error" in read) errors.push({ entry, message: read.error });
        else readings.push({ entry, value: read.value });
      }
    });
    return { readings, errors };
  }

  #read(entry: MetricEntry, doc: unknown): { value: RawValue } | { error: string } {
    let steps = this.#paths.get(entry);
    if (!steps) {
      steps = parseJsonPath(entry.target.fragment);
      this.#paths.set(entry, steps);
    }
    if ("error" in steps) return steps;
    const found = followJsonPath(doc, steps);
    const where = `in ${this.#origin}${requestTarget(entry)}`;
    if ("error" in found) return { error: `${found.error} ${where}` };
    const v = found.value;
    if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") return { value: v };
    return { error: `'${entry.target.fragment}' ${where} is ${kindOf(v)}, not a reading` };
  }

  #getJson(target: string, signal: AbortSignal): Promise<unknown> {
    const url = `${this.#origin}${target}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (err: Error | undefined, value?: unknown) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve(value);
      };
      const req = this.#request({
        host: this.#host,
        port: this.#port,
        path: target,
        method: "GET",
        agent: this.#agent,
        headers: this.#headers,
      }, (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          finish(new Error(statusError(url, status, res.statusMessage ?? "", res.headers.location, this.#headers)));
          // The body of an error answer is not read: it may be endless. The connection goes with it.
          req.destroy();
          return;
        }
        readJsonBody(res, {
          url,
          maxBytes: this.#maxBodyBytes,
          stop: () => req.destroy(),
          done: (err, doc) => {
            if (err) return finish(err);
            try {
              this.#pinFirstUse(req.socket);
              finish(undefined, doc);
            } catch (pinErr) {
              finish(pinErr as Error);
            }
          },
        });
      });
      const onAbort = () => {
        req.socket?.destroy();
        req.destroy();
        for (const socket of this.#connecting) socket.destroy();
        this.#connecting.clear();
        const reason = signal.reason;
        finish(reason instanceof Error ? reason : new Error(`GET ${url} aborted: ${String(reason)}`));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      req.on("error", (err) => finish(this.#describe(url, err)));
      req.end();
    });
  }

  /**
   * Records the pin of a connection accepted on first use, now that it gave a good answer. When
   * another pin was recorded meanwhile (a second connection, `kwollector trust`) and differs,
   * the connection is closed and the document fails.
   */
  #pinFirstUse(socket: object | null): void {
    const pin = socket ? this.#firstUse.get(socket) : undefined;
    if (!socket || !pin) return;
    this.#firstUse.delete(socket);
    let inForce: TlsPin;
    try {
      inForce = this.#pins.pinIfAbsent(pin);
    } catch (err) {
      throw new Error(`Cannot record the TLS certificate pin of ${pin.endpoint} in the spool: ${errorMessage(err)}`);
    }
    if (inForce.fingerprint256 !== pin.fingerprint256) {
      (socket as tls.TLSSocket).destroy();
      throw new CertificateChangedError(pin.endpoint, inForce, pin);
    }
    if (inForce.pinnedAtMs === pin.pinnedAtMs) {
      logger.info("TLS certificate pinned at first use", {
        endpoint: pin.endpoint,
        fingerprint256: pin.fingerprint256,
        subject: pin.subject,
      });
    }
  }

  #describe(url: string, err: Error): Error {
    if (err instanceof CertificateChangedError) return err;
    const code = (err as { code?: string }).code ?? "";
    if (this.#scheme === "https" && (TLS_CODES.has(code) || /certificate/i.test(err.message))) {
      const hint = code === "ERR_TLS_CERT_ALTNAME_INVALID"
        ? "the certificate does not name this host: set redfish_tls_verify to 'ca' to check its chain only"
        : this.#caFile === ""
        ? "set redfish_tls_verify to 'tofu' to pin its certificate at first use, or trust it with redfish_ca_file"
        : `it is not signed by a certificate of redfish_ca_file '${this.#caFile}'`;
      return new Error(
        `Cannot verify the TLS certificate of ${this.#origin}: ${err.message.trim()}${
          code ? ` (${code})` : ""
        }; ${hint}`,
      );
    }
    return new Error(`GET ${url} failed: ${err.message}`);
  }

  async close(): Promise<void> {
    for (const socket of this.#connecting) socket.destroy();
    this.#connecting.clear();
    const agent = this.#agent;
    const sockets = [...Object.values(agent.sockets), ...Object.values(agent.freeSockets)]
      .flat()
      .filter((s): s is NonNullable<typeof s> => s !== undefined && !s.closed);
    const closed = sockets.map((s) => new Promise<void>((resolve) => s.once("close", () => resolve())));
    agent.destroy();
    // A destroyed socket closes on a later turn; waiting for it leaves no open resource behind.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([Promise.all(closed), new Promise((r) => timer = setTimeout(r, CLOSE_WAIT_MS))]);
    clearTimeout(timer);
  }
}

function statusError(
  url: string,
  status: number,
  text: string,
  location: string | undefined,
  headers: Record<string, string>,
): string {
  let message = `GET ${url} answered HTTP ${status}${text ? ` ${text}` : ""}`;
  if (status === 401) {
    message += headers.authorization
      ? ": the BMC refused the user name or password"
      : ": credentials needed in the url";
  } else if (status >= 300 && status < 400 && location) message += ` (redirect to '${location}' not followed)`;
  return message;
}
