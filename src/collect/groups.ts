import type { Config, ConfigKey } from "../config/defaults.ts";
import type { Problem } from "../config/errors.ts";
import type { MetricEntry } from "../config/metrics_dir.ts";
import { configSubset } from "../config/resolve.ts";
import { loadProtocols, type Protocols, SCHEMES } from "../sources/registry.ts";
import type { PollContext, Protocol, ProtocolOptions, Source } from "../sources/source.ts";

/**
 * A poll group: the entries fetched by one request per cycle. Entries share a group when they
 * share a protocol, a device endpoint (host, port, credentials) and an `update_every`: each entry
 * is polled at its own period (Kwollect polled a whole host at its fastest entry's rate).
 *
 * This is where a protocol's options are resolved from the configuration, once per protocol: its
 * `validate` and its sources are given the keys it declares (`configKeys`) and no other.
 */
export interface PollGroup {
  /** Identity of the group; contains credentials, so never shown. */
  key: string;
  /** Shown in logs and status: protocol, endpoint and period, without credentials. */
  name: string;
  scheme: string;
  endpoint: string;
  periodMs: number;
  entries: MetricEntry[];
  /** Creates the group's source, with its protocol's options. */
  open(ctx: PollContext): Source;
}

/** The protocols the entries' urls name, loaded (src/sources/registry.ts), for `buildGroups`. */
export function protocolsOf(entries: readonly MetricEntry[]): Promise<Protocols> {
  return loadProtocols(entries.map((entry) => entry.target.scheme));
}

/**
 * Validates every entry against its protocol among `protocols` (no network access) and builds the
 * groups; an entry whose scheme has no protocol there is a problem naming every scheme the
 * registry supports.
 */
export function buildGroups(
  entries: readonly MetricEntry[],
  config: Config,
  protocols: Protocols,
): { groups: PollGroup[]; problems: Problem[] } {
  const problems: Problem[] = [];
  const groups = new Map<string, PollGroup>();
  const optionsOf = new Map<Protocol, ProtocolOptions<ConfigKey>>();
  for (const entry of entries) {
    const scheme = entry.target.scheme;
    const protocol = protocols.get(scheme);
    if (!protocol) {
      problems.push({
        file: entry.file,
        line: entry.line,
        key: "url",
        message: `Unsupported protocol '${scheme}' in url of metric '${entry.name}' (supported: ${SCHEMES.join(", ")})`,
      });
      continue;
    }
    let options = optionsOf.get(protocol);
    if (!options) {
      options = configSubset(config, protocol.configKeys);
      optionsOf.set(protocol, options);
    }
    const problem = protocol.validate(entry, options);
    if (problem) {
      problems.push({ file: entry.file, line: entry.line, key: "url", message: problem });
      continue;
    }
    const key = `${protocol.groupKey(entry)}|${entry.updateEveryMs}`;
    let group = groups.get(key);
    if (!group) {
      const endpoint = protocol.endpoint(entry);
      const protocolOptions = options;
      const created: PollGroup = {
        key,
        name: `${scheme}://${endpoint} every ${entry.updateEveryMs} ms`,
        scheme,
        endpoint,
        periodMs: entry.updateEveryMs,
        entries: [],
        open: (ctx) => protocol.create(created.entries, { ...ctx, options: protocolOptions }),
      };
      group = created;
      groups.set(key, group);
    }
    group.entries.push(entry);
  }
  return { groups: [...groups.values()], problems };
}
