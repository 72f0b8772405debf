import { errorMessage, logger } from "../../log.ts";
import { findTemplateSuffix, type OidTemplate, substituteTemplates, templateKey } from "./template.ts";

/**
 * Resolves the OID templates of one agent, as Kwollect did: walk each template's prefix, take the
 * row whose value is the expected text. Templates sharing a prefix share one walk.
 *
 * - A prefix never walked successfully is walked during the poll, which waits for it; when the
 *   agent does not answer, the error propagates and the poll fails like any unanswered request.
 * - A walked prefix is walked again every 300 s (Kwollect's period) in the background; the poll
 *   keeps using the previous result meanwhile, and keeps it if the new walk fails (retried 30 s
 *   later).
 * - An unresolved template makes only its entries fail. Changes of a template's resolution are
 *   logged once when they happen; the entry errors are logged by the scheduler when they start
 *   and end.
 */

export interface WalkedValue {
  oid: string;
  text: string;
}

export type Walk = (prefix: string, signal: AbortSignal) => Promise<WalkedValue[]>;

export const REFRESH_MS = 300_000;
export const RETRY_MS = 30_000;

interface PrefixState {
  walked: WalkedValue[] | undefined;
  /** Why the last walk failed, while no walk has succeeded. */
  error: string | undefined;
  dueAtMs: number;
  refreshing: Promise<void> | undefined;
  refreshFailing: boolean;
}

export class TemplateResolver {
  #walk: Walk;
  #agent: string;
  #now: () => number;
  #prefixes = new Map<string, PrefixState>();
  /** Template key → resolved suffix, for logging changes. */
  #suffixes = new Map<string, string | undefined>();
  #background = new AbortController();

  constructor(walk: Walk, agent: string, now: () => number = () => performance.now()) {
    this.#walk = walk;
    this.#agent = agent;
    this.#now = now;
  }

  /**
   * Walks the prefixes of `templates` that were never walked, and starts the due refreshes.
   * Rejects with a walk's error when one of the awaited walks failed (its templates then report
   * that error until a walk succeeds).
   */
  async prepare(templates: readonly OidTemplate[], signal: AbortSignal): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const prefix of new Set(templates.map((t) => t.prefix))) {
      let state = this.#prefixes.get(prefix);
      if (!state) {
        state = { walked: undefined, error: undefined, dueAtMs: 0, refreshing: undefined, refreshFailing: false };
        this.#prefixes.set(prefix, state);
      }
      if (state.walked === undefined) waits.push(state.refreshing ?? this.#refresh(prefix, state, signal, true));
      else if (!state.refreshing && this.#now() >= state.dueAtMs) {
        // Failures are kept in the state; nothing waits for this walk.
        void this.#refresh(prefix, state, this.#background.signal, false).catch(() => {});
      }
    }
    const failed = (await Promise.allSettled(waits)).find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  /** `oid` with its templates replaced, or why one of them has no value yet. */
  resolve(oid: string, templates: readonly OidTemplate[]): { oid: string } | { error: string } {
    const suffixes: string[] = [];
    for (const t of templates) {
      const state = this.#prefixes.get(t.prefix);
      if (!state?.walked) {
        return { error: `OID template '${t.text}' not resolved: ${state?.error ?? "prefix not walked yet"}` };
      }
      const suffix = findTemplateSuffix(t.prefix, state.walked, t.expected);
      this.#noteResolution(t, suffix);
      if (suffix === undefined) {
        return { error: `OID template '${t.text}' not resolved: no value under ${t.prefix} equals '${t.expected}'` };
      }
      suffixes.push(suffix);
    }
    return { oid: substituteTemplates(oid, suffixes) };
  }

  /** Stops background refreshes. */
  close(): void {
    this.#background.abort(new Error("SNMP source closed"));
  }

  #refresh(prefix: string, state: PrefixState, signal: AbortSignal, first: boolean): Promise<void> {
    const run = async () => {
      try {
        state.walked = await this.#walk(prefix, signal);
        state.error = undefined;
        state.dueAtMs = this.#now() + REFRESH_MS;
        if (state.refreshFailing) logger.info("SNMP template walk works again", { agent: this.#agent, prefix });
        state.refreshFailing = false;
      } catch (err) {
        state.dueAtMs = this.#now() + RETRY_MS;
        if (first) {
          state.error = errorMessage(err);
          throw err;
        }
        if (!state.refreshFailing && !this.#background.signal.aborted) {
          logger.warning("SNMP template walk failed; keeping the previous resolution", {
            agent: this.#agent,
            prefix,
            error: errorMessage(err),
          });
        }
        state.refreshFailing = true;
      } finally {
        state.refreshing = undefined;
      }
    };
    state.refreshing = run();
    return state.refreshing;
  }

  #noteResolution(t: OidTemplate, suffix: string | undefined): void {
    const key = templateKey(t);
    if (this.#suffixes.has(key) && this.#suffixes.get(key) === suffix) return;
    this.#suffixes.set(key, suffix);
    if (suffix !== undefined) {
      logger.info("SNMP OID template resolved", { agent: this.#agent, template: t.text, suffix });
    }
  }
}
