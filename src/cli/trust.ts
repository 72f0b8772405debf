import { UsageError } from "../config/errors.ts";
import { errorMessage } from "../log.ts";
import { pinEndpoint, SpoolTlsPins } from "../spool/tls_pins.ts";
import { fetchCertificate } from "../sources/redfish/tls_trust.ts";
import { parseCommand } from "./args.ts";

export const TRUST_HELP = `kwollector trust [CONFIG] HOST[:PORT] [--fingerprint SHA256] [--key value ...]

Pins the TLS certificate that HOST presents now (port 443 by default) for https metric urls
under redfish_tls_verify: tofu, in place of the one pinned before: after a BMC's certificate was
replaced on purpose, polls of that host fail until it is trusted again. With --fingerprint (as
the error message of the failing poll prints it), nothing is pinned unless HOST presents exactly
that certificate. Works while 'kwollector run' is running; run uses the new pin at its next
connection to HOST.

Examples:
  kwollector trust /etc/kwollect/kwollector.yaml node-1-bmc.site.example:443 --fingerprint 3F:A1:...
  kwollector trust /etc/kwollect/kwollector.yaml 192.0.2.17`;

export async function trustCommand(argv: string[]): Promise<number> {
  const { resolved, args, values } = parseCommand(argv, { values: ["fingerprint"], positionals: ["HOST"] });
  const c = resolved.config;
  const { host, port } = parseHostPort(args[0]!);
  const endpoint = pinEndpoint(host, port);
  const wanted = values.get("fingerprint");
  let presented;
  try {
    presented = await fetchCertificate(host, port, c.poll_timeout_ms);
  } catch (err) {
    console.error(`${errorMessage(err)}: nothing pinned`);
    return 1;
  }
  if (wanted !== undefined && normalize(wanted) !== presented.fingerprint256) {
    throw new UsageError(`${endpoint} presents ${presented.fingerprint256}, not ${wanted}: nothing pinned`);
  }
  const pins = SpoolTlsPins.open(c.spool_path);
  try {
    const previous = pins.replace({ endpoint, ...presented, pinnedAtMs: Date.now() });
    const was = previous === undefined
      ? "first pin of this host"
      : previous.fingerprint256 === presented.fingerprint256
      ? "unchanged"
      : `replaces ${previous.fingerprint256}`;
    console.log(
      `Pinned ${endpoint}: ${presented.fingerprint256} (${presented.subject}, valid until ${presented.validTo}); ${was}`,
    );
  } finally {
    pins.close();
  }
  return 0;
}

/** `host`, `host:port`, `[v6]:port` or a bare IPv6 address; the port defaults to 443. */
function parseHostPort(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$|^([^:\s]+)(?::(\d+))?$|^([0-9a-fA-F:]+)$/.exec(text.trim());
  const host = m?.[1] ?? m?.[3] ?? m?.[5];
  const port = Number(m?.[2] ?? m?.[4] ?? 443);
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(`Cannot parse host '${text}': expected HOST, HOST:PORT or [IPv6]:PORT`);
  }
  return { host: host.toLowerCase(), port };
}

/** A fingerprint as node:tls writes it: upper-case hexadecimal pairs joined by colons. */
function normalize(fingerprint: string): string {
  // Also as openssl prints it: "sha256 Fingerprint=AB:CD:...".
  const hex = (fingerprint.split("=").pop() ?? "").replace(/[:\s]/g, "").toUpperCase();
  return hex.match(/.{1,2}/g)?.join(":") ?? "";
}
