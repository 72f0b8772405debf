import type { MetricEntry } from "../../config/metrics_dir.ts";
import type { RawValue } from "../../sample.ts";
import { AgentStatusError, ErrorStatus } from "./agent_status.ts";
// net-snmp is loaded with the first session: a collector without SNMP entries never loads it.
import type { SnmpSession } from "./session.ts";
import { TemplateResolver } from "./resolver.ts";
import { parseSnmpTarget, type SnmpTarget } from "./url.ts";
import { varbindValue } from "./value.ts";
import type { EntryError, PollResult, Protocol, Reading, Source, SourceContext } from "../source.ts";

/**
 * SNMP agents (v1, v2c, v3): one poll group per agent endpoint and credentials.
 *
 * URL syntax (details and SNMPv3 parameters in url.ts):
 *   snmp://<community>@<host>[:port]/<oid>       v2c, as in Kwollect
 *   snmpv1://<community>@<host>[:port]/<oid>     v1
 *   snmpv3://<user>[:<authpass>[:<privpass>]]@<host>[:port]/<oid>[?auth=sha|md5|...][&priv=aes|des|...]
 * The port defaults to 161 and is honoured (Kwollect always used 161). A leading dot in the OID
 * is accepted. The OID may hold Kwollect templates, `{{ <oid prefix> == <text> }}` (see
 * resolver.ts).
 *
 * Each cycle reads every OID of the group with GETs of at most `snmp_max_oids_per_request`
 * OIDs (Kwollect: 50, to avoid IP fragmentation). Unlike Kwollect, which sent them one after
 * another, up to 4 GETs are in flight at once: a group's OIDs then cost about one round trip,
 * while an embedded agent still sees a short, bounded burst. Each GET waits `snmp_timeout_ms`
 * (5 s) for its answer and is re-sent `snmp_retries` times (1, as Kwollect), the time a slow PDU
 * really needs, independent of update_every; the poll as a whole is bounded by
 * `poll_timeout_ms`, and the scheduler skips the slots that fall due meanwhile.
 *
 * Failures: an OID the agent does not have (noSuchObject, noSuchInstance, endOfMibView, or the
 * v1 noSuchName that fails a whole v1 PDU: that OID is dropped and the rest asked again) is an
 * error of its entries only. A GET the agent refuses with another error-status fails the entries
 * of that GET (for tooBig, the message suggests a lower snmp_max_oids_per_request). When no GET
 * of the cycle got an answer,
 * the whole poll fails (the scheduler records a device failure); when some did, the entries of
 * the unanswered ones fail alone and the others are kept.
 *
 * Values: Integer, Counter32, Gauge32 and TimeTicks are numbers; Counter64 is an exact bigint;
 * OctetString is text (numeric text becomes a number later, other text NaN with `value_str`).
 */

const MAX_GETS_IN_FLIGHT = 4;

const CONFIG_KEYS = ["snmp_timeout_ms", "snmp_retries", "snmp_max_oids_per_request"] as const;
type SnmpKey = (typeof CONFIG_KEYS)[number];

export const snmp: Protocol<SnmpKey> = {
  configKeys: CONFIG_KEYS,
  validate(entry) {
    const t = parseSnmpTarget(entry);
    return "error" in t ? t.error : undefined;
  },
  groupKey(entry) {
    const t = targetOf(entry);
    const auth = t.user
      ? [
        t.user.name,
        t.user.level,
        t.user.auth?.protocol,
        t.user.auth?.password,
        t.user.priv?.protocol,
        t.user.priv?.password,
      ]
      : [t.community];
    return `snmp${JSON.stringify([t.version, t.host, t.port, ...auth])}`;
  },
  endpoint(entry) {
    const t = targetOf(entry);
    return `${t.host.includes(":") ? `[${t.host}]` : t.host}:${t.port}`;
  },
  create: (entries, ctx) => new SnmpSource(entries, ctx),
};

function targetOf(entry: MetricEntry): SnmpTarget {
  const t = parseSnmpTarget(entry);
  if ("error" in t) throw new Error(t.error);
  return t;
}

/** Per-OID result of a cycle: the raw value, or why there is none. */
type OidResult = RawValue | { error: string };

class SnmpSource implements Source {
  #target: SnmpTarget;
  #endpoint: string;
  #ctx: SourceContext<SnmpKey>;
  #targets = new Map<MetricEntry, SnmpTarget>();
  #session: SnmpSession | undefined;
  #resolver: TemplateResolver;
  #closed = false;

  constructor(entries: readonly MetricEntry[], ctx: SourceContext<SnmpKey>) {
    this.#ctx = ctx;
    for (const e of entries) this.#targets.set(e, targetOf(e));
    this.#target = this.#targetFor(entries[0]!);
    this.#endpoint = snmp.endpoint(entries[0]!);
    this.#resolver = new TemplateResolver((prefix, signal) => this.#walk(prefix, signal), this.#endpoint);
  }

  async poll(entries: readonly MetricEntry[], signal: AbortSignal): Promise<PollResult> {
    if (this.#closed) throw new Error(`SNMP source for ${this.#endpoint} is closed`);
    const targets = entries.map((entry) => ({ entry, target: this.#targetFor(entry) }));
    const templates = targets.flatMap((t) => t.target.templates);
    if (templates.length > 0) {
      try {
        await this.#resolver.prepare(templates, signal);
      } catch (err) {
        // An agent that answers with an error-status is up: only the templated entries fail.
        if (!(err instanceof AgentStatusError)) throw err;
      }
    }
    const readings: Reading[] = [];
    const errors: EntryError[] = [];
    const byOid = new Map<string, MetricEntry[]>();
    for (const { entry, target } of targets) {
      const resolved = target.templates.length > 0
        ? this.#resolver.resolve(target.oid, target.templates)
        : { oid: target.oid };
      if ("error" in resolved) {
        errors.push({ entry, message: resolved.error });
        continue;
      }
      const list = byOid.get(resolved.oid);
      if (list) list.push(entry);
      else byOid.set(resolved.oid, [entry]);
    }
    if (byOid.size === 0) return { readings, errors };
    const results = await this.#getAll([...byOid.keys()], signal);
    for (const [oid, list] of byOid) {
      const result = results.get(oid) ?? { error: `No answer for ${oid} from ${this.#endpoint}` };
      for (const entry of list) {
        if (typeof result === "object") errors.push({ entry, message: result.error });
        // The entry is the series (its metric and labels are its own): "" names it.
        else readings.push({ entry, value: result, seriesKey: "" });
      }
    }
    return { readings, errors };
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#resolver.close();
    this.#session?.close();
    this.#session = undefined;
    return Promise.resolve();
  }

  #targetFor(entry: MetricEntry): SnmpTarget {
    let t = this.#targets.get(entry);
    if (!t) {
      t = targetOf(entry);
      this.#targets.set(entry, t);
    }
    return t;
  }

  /** The session, opened again after an abort closed it. */
  async #open(): Promise<SnmpSession> {
    if (!this.#session || this.#session.closed) {
      const { SnmpSession } = await import("./session.ts");
      this.#session = new SnmpSession(this.#target, {
        requestTimeoutMs: this.#ctx.options.snmp_timeout_ms,
        retries: this.#ctx.options.snmp_retries,
      });
    }
    return this.#session;
  }

  async #walk(prefix: string, signal: AbortSignal) {
    const vbs = await (await this.#open()).walk(prefix, signal);
    return vbs.map((vb) => {
      const value = varbindValue(vb);
      return { oid: vb.oid, text: typeof value === "object" ? "" : String(value) };
    });
  }

  /** GETs every OID, at most `snmp_max_oids_per_request` per GET and 4 GETs at a time. */
  async #getAll(oids: string[], signal: AbortSignal): Promise<Map<string, OidResult>> {
    const perGet = this.#ctx.options.snmp_max_oids_per_request;
    const chunks: string[][] = [];
    for (let i = 0; i < oids.length; i += perGet) chunks.push(oids.slice(i, i + perGet));
    const results = new Map<string, OidResult>();
    const state = { answered: false, unanswered: undefined as Error | undefined, next: 0 };
    const session = await this.#open();
    const worker = async () => {
      while (state.next < chunks.length) {
        // An agent that has not answered yet and has just timed out is not asked again this cycle.
        if (state.unanswered && !state.answered) return;
        const chunk = chunks[state.next++]!;
        try {
          await this.#get(session, chunk, signal, results, state);
        } catch (err) {
          if (signal.aborted) throw signal.reason;
          state.unanswered ??= err as Error;
          for (const oid of chunk) if (!results.has(oid)) results.set(oid, { error: (err as Error).message });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(MAX_GETS_IN_FLIGHT, chunks.length) }, worker));
    if (!state.answered && state.unanswered) throw state.unanswered;
    return results;
  }

  /**
   * One GET; a v1 noSuchName drops the OID it names and asks again for the others. Throws when
   * the agent did not answer.
   */
  async #get(
    session: SnmpSession,
    oids: string[],
    signal: AbortSignal,
    results: Map<string, OidResult>,
    state: { answered: boolean },
  ): Promise<void> {
    let pending = oids;
    while (pending.length > 0) {
      try {
        const vbs = await session.get(pending, signal);
        state.answered = true;
        pending.forEach((oid, i) => {
          const vb = vbs[i];
          results.set(
            oid,
            vb ? varbindValue(vb) : { error: `No varbind for ${oid} in the answer of ${this.#endpoint}` },
          );
        });
        return;
      } catch (err) {
        if (!(err instanceof AgentStatusError)) throw err;
        state.answered = true;
        const culprit = err.oid;
        if (err.status === ErrorStatus.NoSuchName && culprit !== undefined && pending.includes(culprit)) {
          results.set(culprit, { error: `noSuchName for ${culprit}` });
          pending = pending.filter((oid) => oid !== culprit);
          continue;
        }
        const hint = err.status === ErrorStatus.TooBig ? " (lower snmp_max_oids_per_request)" : "";
        for (const oid of pending) results.set(oid, { error: err.message + hint });
        return;
      }
    }
  }
}
