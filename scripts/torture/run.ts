/**
 * The set-up, bookkeeping and tear-down that every torture scenario against the real collector
 * shares, written once. A scenario opens a run with `await using`, asks it for what it needs (a
 * central database, counting exporters, the collector's configuration, collector processes), and
 * everything it got is closed when the scenario returns or throws, in reverse order: collectors
 * still running are killed, the configuration removed, exporters closed, databases destroyed.
 * The run also holds the problems, notes and counts its result is made of.
 */
import { type CollectorOptions, type CollectorProcess, startCollector } from "../harness/collector.ts";
import { startCentral } from "../peers/central.ts";
import { destroyPostgres, type PgCluster, type PostgresOptions } from "../peers/postgres.ts";
import { type CountingExporter, startCountingExporter } from "../peers/prometheus_exporter.ts";
import { checkDelivery, type DeliveryCheck } from "./delivery_check.ts";
import { type Life, unexplainedMissing } from "./lives.ts";
import { type Rig, type RigOptions, writeRig } from "./rig.ts";
import { prng, type ScenarioResult, scenarioResult, type ScenarioSize } from "./scenario.ts";

export class TortureRun implements AsyncDisposable {
  /** The scenario's pseudo-random choices, from its seed. */
  readonly random: () => number;
  /** What failed the pass criteria: a run passes when there is none. */
  readonly problems: string[] = [];
  readonly notes: string[] = [];
  readonly counts: Record<string, number | string>;
  #startedMs = performance.now();
  #owned = new AsyncDisposableStack();

  constructor(size: ScenarioSize, counts: Record<string, number | string> = {}) {
    this.random = prng(size.seed);
    this.counts = { seed: size.seed, ...counts };
  }

  /** Closes `resource` with `close` when the run ends (before anything the run got earlier). */
  own<T>(resource: T, close: (resource: T) => Promise<unknown>): T {
    this.#owned.defer(() => close(resource).then(() => {}));
    return resource;
  }

  /** A test PostgreSQL set up as the central database. */
  async central(opts: PostgresOptions = {}): Promise<PgCluster> {
    return this.own(await startCentral(opts), destroyPostgres);
  }

  /** A counting exporter (one value per scrape, on `series` series). */
  exporter(opts: Parameters<typeof startCountingExporter>[0] = {}): CountingExporter {
    return this.own(startCountingExporter(opts), (e) => e.close());
  }

  /** The collector's configuration directory (writeRig). */
  async rig(opts: RigOptions): Promise<Rig> {
    return this.own(await writeRig(opts), (rig) => Deno.remove(rig.dir, { recursive: true }).catch(() => {}));
  }

  /** `kwollector run CONFIG`; killed with SIGKILL if it still runs when the run ends. */
  collector(config: string, opts: CollectorOptions = {}): CollectorProcess {
    return this.own(startCollector(["run", config], opts), (c) => c.stop("SIGKILL"));
  }

  /**
   * The end-of-run check of a drained spool: its problems become the run's, and so, given the
   * collector's lives, does every served value missing that none of their faults explains.
   */
  async checkDelivery(
    pg: PgCluster,
    spoolPath: string,
    exporter: CountingExporter,
    unexplained?: { lives: Life[]; problem: string },
  ): Promise<DeliveryCheck> {
    const check = await checkDelivery(pg, spoolPath, exporter);
    this.problems.push(...check.problems);
    if (unexplained) {
      const missing = unexplainedMissing(check.missingValues, unexplained.lives);
      if (missing.length > 0) this.problems.push(`${unexplained.problem}: ${missing.slice(0, 20).join(", ")}`);
    }
    return check;
  }

  /** The scenario's result: passed when no problem was found. */
  result(what: { name: string; fault: string; criteria: string }): ScenarioResult {
    return scenarioResult(what, {
      problems: this.problems,
      notes: this.notes,
      counts: this.counts,
      startedMs: this.#startedMs,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#owned.disposeAsync();
  }
}
