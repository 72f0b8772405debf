/**
 * Metric URLs, split the way Kwollect's Python `urlparse` splits them: scheme, user and password
 * (URL-unquoted), host (lower-cased), port, path without its leading "/" (URL-unquoted), query
 * and fragment. Kwollect's SNMP templates (`{{ 1.3.6... == text }}`) contain spaces and `=`,
 * which is why this does not go through the WHATWG URL class.
 *
 * A metrics.d file may hold thousands of entries, each with its parsed URL: a URL without a
 * query shares one empty, read-only query instead of a URLSearchParams of its own, and the URLs
 * parsed with one `UrlParts` share their equal schemes, users, passwords and hosts (a file of
 * 5,000 devices behind one exporter held 5,000 copies of "prometheus" and of its host).
 */

/** The parts already made by the URLs of one file: equal parts are one string. */
export type UrlParts = Map<string, string>;

function shared(part: string, parts: UrlParts | undefined): string {
  if (!parts) return part;
  const known = parts.get(part);
  if (known !== undefined) return known;
  parts.set(part, part);
  return part;
}

/** A parsed query string, read-only: URLs without a query share one. */
export type MetricUrlQuery = Omit<URLSearchParams, "append" | "delete" | "set" | "sort">;

const NO_QUERY: MetricUrlQuery = new URLSearchParams();

export interface MetricUrl {
  scheme: string;
  username: string;
  password: string;
  host: string;
  port: number | undefined;
  path: string;
  query: MetricUrlQuery;
  fragment: string;
}

const URL_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#(.*))?$/s;

export function parseMetricUrl(url: string, parts?: UrlParts): MetricUrl | { error: string } {
  const m = URL_RE.exec(url.trim());
  if (!m) return { error: `Cannot parse url '${redactUrl(url)}': expected <scheme>://<host>/<path>` };
  const [, scheme = "", netloc = "", rawPath = "", query = "", fragment = ""] = m;
  const at = netloc.lastIndexOf("@");
  const userinfo = at >= 0 ? netloc.slice(0, at) : "";
  const hostport = at >= 0 ? netloc.slice(at + 1) : netloc;
  const colon = userinfo.indexOf(":");
  const username = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
  const password = colon >= 0 ? userinfo.slice(colon + 1) : "";
  let host = hostport;
  let port: number | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d*))?$/.exec(hostport);
  const portMatch = /^([^:]*):(\d*)$/.exec(hostport);
  if (bracket) {
    host = bracket[1] ?? "";
    if (bracket[2]) port = Number(bracket[2]);
  } else if (portMatch) {
    host = portMatch[1] ?? "";
    if (portMatch[2]) port = Number(portMatch[2]);
  } else if (hostport.includes(":")) {
    return { error: `Cannot parse url '${redactUrl(url)}': invalid port in '${hostport}'` };
  }
  if (port !== undefined && (port < 1 || port > 65535)) {
    return { error: `Cannot parse url '${redactUrl(url)}': port ${port} is out of range` };
  }
  if (host === "") return { error: `Cannot parse url '${redactUrl(url)}': missing host` };
  try {
    return {
      scheme: shared(scheme.toLowerCase(), parts),
      username: shared(decodeURIComponent(username), parts),
      password: shared(decodeURIComponent(password), parts),
      host: shared(host.toLowerCase(), parts),
      port,
      path: decodeURIComponent(rawPath.replace(/^\//, "")),
      query: query === "" ? NO_QUERY : new URLSearchParams(query),
      fragment: decodeURIComponent(fragment),
    };
  } catch {
    return { error: `Cannot parse url '${redactUrl(url)}': invalid percent-encoding` };
  }
}

/**
 * The URL for messages: its password replaced by "***", and a user part without a password
 * (an SNMP community) replaced whole, since it is the secret itself.
 */
export function redactUrl(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)@/, (_, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(":");
    return `${scheme}${colon >= 0 ? userinfo.slice(0, colon + 1) : ""}***@`;
  });
}
