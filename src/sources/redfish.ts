import http from "node:http";
import https from "node:https";
import { Buffer } from "node:buffer";
import type { Config } from "../config/defaults.ts";
import type { MetricEntry } from "../config/metrics_dir.ts";
import { registerSecret } from "../log.ts";
import type { RawValue } from "../sample.ts";
import { VERSION } from "../version.ts";
import { followJsonPath, kindOf, parseJsonPath, type PathStep } from "./json_path.ts";
import type { EntryError, PollResult, Protocol, Reading, Source, SourceContext } from "./source.ts";

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
 *   fetched (refused, TLS, non-2xx, not JSON) fails its entries, and the whole poll when no
 *   document of the group could be fetched.
 * - Values: numbers, numeric text and booleans are stored as numbers; other text is stored as
 *   NaN with `value_str` (e.g. `Status.Health` = "OK"); null, objects and arrays are entry
 *   errors.
 *
 * TLS (https URLs) is set by two configuration keys, since a URL has no room for options (its
 * fragment is the JSON path, and its query goes to the BMC):
 * - `redfish_tls_verify`: `full` (default) checks the certificate chain and that the certificate
 *   names the URL host; `ca` checks the chain only, for self-signed BMC certificates whose name
 *   is not the host name; `none` checks nothing, so the BMC password goes to whoever answers.
 * - `redfish_ca_file`: PEM file of the certificates trusted instead of the built-in roots: a site
 *   CA, or the self-signed certificates of the BMCs themselves.
 * Plain `http://` URLs send the password in clear; they exist because Kwollect accepted them.
 *
 * The requests go through node:https, the only client in Deno that can accept a self-signed
 * certificate for one connection only; its abort does not interrupt a request on a reused
 * keep-alive socket, so an abort also destroys the socket.
 */

const DEFAULT_PORT: Record<string, number> = { http: 80, https: 443 };
const MAX_CONNECTIONS = 2;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
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

export const redfish: Protocol = {
  validate(entry, config) {
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
    if (entry.target.scheme === "https" && config.redfish_ca_file !== "") {
      const ca = readCaFile(config.redfish_ca_file);
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

function tlsOptions(config: Config): https.AgentOptions {
  const ca = config.redfish_ca_file === "" ? undefined : readCaFile(config.redfish_ca_file);
  if (ca && "error" in ca) throw new Error(ca.error);
  const trust = ca ? { ca: ca.certs } : {};
  switch (config.redfish_tls_verify) {
    case "none":
      return { rejectUnauthorized: false };
    case "ca":
      return { ...trust, rejectUnauthorized: true, checkServerIdentity: () => undefined };
    default:
      return { ...trust, rejectUnauthorized: true };
  }
}

class RedfishSource implements Source {
  #scheme: string;
  #host: string;
  #port: number;
  #origin: string;
  #caFile: string;
  #agent: http.Agent;
  #request: typeof http.request;
  #headers: Record<string, string>;
  #paths = new Map<MetricEntry, PathStep[] | { error: string }>();

  constructor(entries: readonly MetricEntry[], ctx: SourceContext) {
    const first = entries[0]!;
    const t = first.target;
    this.#scheme = t.scheme;
    this.#host = t.host;
    this.#port = portOf(first);
    this.#origin = `${t.scheme}://${hostForUrl(t.host)}:${this.#port}`;
    this.#caFile = ctx.config.redfish_ca_file;
    const pool = { keepAlive: true, maxSockets: MAX_CONNECTIONS };
    if (t.scheme === "https") {
      this.#agent = new https.Agent({ ...pool, ...tlsOptions(ctx.config) });
      this.#request = https.request as typeof http.request;
    } else {
      this.#agent = new http.Agent(pool);
      this.#request = http.request;
    }
    this.#headers = {
      accept: "application/json",
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
          res.resume();
          finish(new Error(statusError(url, status, res.statusMessage ?? "", res.headers.location, this.#headers)));
          return;
        }
        const chunks: Uint8Array[] = [];
        let size = 0;
        res.on("data", (chunk: Uint8Array) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) {
            req.destroy();
            finish(new Error(`GET ${url} sent more than the ${MAX_BODY_BYTES} bytes accepted`));
          } else chunks.push(chunk);
        });
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          try {
            finish(undefined, JSON.parse(text));
          } catch (err) {
            const type = res.headers["content-type"] ?? "none";
            finish(new Error(`GET ${url} did not answer JSON (content-type '${type}'): ${(err as Error).message}`));
          }
        });
        res.on("error", (err) => finish(this.#describe(url, err)));
      });
      const onAbort = () => {
        req.socket?.destroy();
        req.destroy();
        const reason = signal.reason;
        finish(reason instanceof Error ? reason : new Error(`GET ${url} aborted: ${String(reason)}`));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      req.on("error", (err) => finish(this.#describe(url, err)));
      req.end();
    });
  }

  #describe(url: string, err: Error): Error {
    const code = (err as { code?: string }).code ?? "";
    if (this.#scheme === "https" && (TLS_CODES.has(code) || /certificate/i.test(err.message))) {
      const hint = code === "ERR_TLS_CERT_ALTNAME_INVALID"
        ? "the certificate does not name this host: set redfish_tls_verify to 'ca' to check its chain only"
        : this.#caFile === ""
        ? "trust it with redfish_ca_file, or set redfish_tls_verify to 'none' to skip verification"
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
