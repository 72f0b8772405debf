import type { MetricEntry } from "../../config/metrics_dir.ts";
import { type MetricUrlQuery, redactUrl } from "../../config/metric_url.ts";
import { registerSecret } from "../../log.ts";
import { type OidTemplate, parseOidTemplate } from "./template.ts";

/**
 * SNMP metric URLs. The path is the OID (a leading dot is accepted), possibly with Kwollect
 * templates `{{ <oid prefix> == <text> }}`; the port defaults to 161 (Kwollect ignored it, we
 * honour it).
 *
 *   snmp://<community>@<host>[:port]/<oid>        SNMP v2c (Kwollect's scheme)
 *   snmpv1://<community>@<host>[:port]/<oid>      SNMP v1 (Grid'5000's Eaton PDUs)
 *   snmpv3://<user>[:<authpass>[:<privpass>]]@<host>[:port]/<oid>[?auth=<a>][&priv=<p>]
 *
 * SNMPv3: the security level follows from the passwords given: none → noAuthNoPriv, an
 * authentication password → authNoPriv, both → authPriv. `auth` is md5, sha (default), sha224,
 * sha256, sha384 or sha512; `priv` is des, aes (default, AES-128), aes256b or aes256r (AES-256
 * with Blumenthal or Reeder key localisation). A `:` inside a password is written `%3A`, and `@`
 * as `%40`. Both passwords are registered as secrets, so logs never show them.
 */

export type SnmpVersion = "1" | "2c" | "3";
export const AUTH_PROTOCOLS = ["md5", "sha", "sha224", "sha256", "sha384", "sha512"] as const;
export const PRIV_PROTOCOLS = ["des", "aes", "aes256b", "aes256r"] as const;
export type AuthProtocol = typeof AUTH_PROTOCOLS[number];
export type PrivProtocol = typeof PRIV_PROTOCOLS[number];

export interface SnmpV3User {
  name: string;
  level: "noAuthNoPriv" | "authNoPriv" | "authPriv";
  auth?: { protocol: AuthProtocol; password: string };
  priv?: { protocol: PrivProtocol; password: string };
}

export interface SnmpTarget {
  version: SnmpVersion;
  host: string;
  port: number;
  /** v1 and v2c only. */
  community: string;
  /** v3 only. */
  user: SnmpV3User | undefined;
  /** The OID without a leading dot, templates left in place. */
  oid: string;
  /** The templates of `oid`, in order; empty for a plain OID. */
  templates: OidTemplate[];
}

const VERSIONS: Record<string, SnmpVersion> = { snmp: "2c", snmpv1: "1", snmpv3: "3" };
export const DEFAULT_SNMP_PORT = 161;
const V3_QUERY_KEYS = new Set(["auth", "priv"]);

/** Parses and checks an SNMP entry's URL without any network access. */
export function parseSnmpTarget(entry: MetricEntry): SnmpTarget | { error: string } {
  const t = entry.target;
  const where = `url '${redactUrl(entry.url)}'`;
  const version = VERSIONS[t.scheme];
  if (version === undefined) return { error: `Unsupported SNMP scheme '${t.scheme}' in ${where}` };
  const oid = t.path.trim().replace(/^\./, "");
  const parsedOid = parseOidTemplate(oid);
  if ("error" in parsedOid) return { error: `${parsedOid.error} in ${where}` };
  const common = { version, host: t.host, port: t.port ?? DEFAULT_SNMP_PORT, oid, templates: parsedOid.templates };
  if (version !== "3") {
    if ([...t.query.keys()].length > 0) return { error: `Unexpected query string in ${where}` };
    if (t.password !== "") {
      return {
        error:
          `Unexpected password in ${where}: SNMP ${version} takes a community only (${t.scheme}://<community>@<host>/<oid>)`,
      };
    }
    if (t.username === "") {
      return { error: `Missing community in ${where} (expected ${t.scheme}://<community>@<host>/<oid>)` };
    }
    registerSecret(t.username);
    return { ...common, community: t.username, user: undefined };
  }
  for (const key of t.query.keys()) {
    if (!V3_QUERY_KEYS.has(key)) return { error: `Unknown parameter '${key}' in ${where} (known: auth, priv)` };
  }
  const user = parseV3User(entry.url, t.query);
  if ("error" in user) return { error: `${user.error} in ${where}` };
  return { ...common, community: "", user };
}

/**
 * The user part is split here from the raw URL, not from the parsed target: the parser decodes
 * `%3A` before splitting user and password at the first `:`, which would make a `:` inside the
 * authentication password indistinguishable from the separator of the privacy password.
 */
function parseV3User(url: string, query: MetricUrlQuery): SnmpV3User | { error: string } {
  const netloc = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(url.trim())?.[1] ?? "";
  const at = netloc.lastIndexOf("@");
  const parts = at < 0 ? [] : netloc.slice(0, at).split(":");
  if (parts.length > 3) return { error: "Too many ':' in the user part (a ':' inside a password is written %3A)" };
  let name: string, authPassword: string, privPassword: string;
  try {
    [name, authPassword, privPassword] = [0, 1, 2].map((i) => decodeURIComponent(parts[i] ?? "")) as [
      string,
      string,
      string,
    ];
  } catch {
    return { error: "Invalid percent-encoding in the user part" };
  }
  if (name === "") {
    return { error: "Missing SNMPv3 user (expected snmpv3://<user>[:<authpass>[:<privpass>]]@<host>/<oid>)" };
  }
  registerSecret(authPassword);
  registerSecret(privPassword);
  const authName = query.get("auth") ?? "sha";
  const privName = query.get("priv") ?? "aes";
  if (!(AUTH_PROTOCOLS as readonly string[]).includes(authName)) {
    return { error: `Unknown auth protocol '${authName}' (known: ${AUTH_PROTOCOLS.join(", ")})` };
  }
  if (!(PRIV_PROTOCOLS as readonly string[]).includes(privName)) {
    return { error: `Unknown priv protocol '${privName}' (known: ${PRIV_PROTOCOLS.join(", ")})` };
  }
  if (authPassword === "") {
    if (privPassword !== "") return { error: "A privacy password needs an authentication password" };
    if (query.has("auth") || query.has("priv")) return { error: "auth and priv need passwords" };
    return { name, level: "noAuthNoPriv" };
  }
  // RFC 3414 §11.2: passwords shorter than 8 characters are refused by agents (net-snmp too).
  for (const [what, pw] of [["authentication", authPassword], ["privacy", privPassword]] as const) {
    if (pw !== "" && pw.length < 8) return { error: `The ${what} password is shorter than 8 characters` };
  }
  const auth = { protocol: authName as AuthProtocol, password: authPassword };
  if (privPassword === "") {
    if (query.has("priv")) return { error: "priv needs a privacy password" };
    return { name, level: "authNoPriv", auth };
  }
  return { name, level: "authPriv", auth, priv: { protocol: privName as PrivProtocol, password: privPassword } };
}
