import { log, type LogLevel } from "../log.ts";

/**
 * The collector's own health, kept as a set of named events (src/telemetry/events.ts). One call
 * both logs an event at its operator-impact level and counts it, so the journal and the figures
 * can never disagree. A condition that persists (a device failing, the central database
 * unreachable, the spool full) is logged once when it starts and once when it ends, and counted
 * while active, however many polls it spans.
 *
 * The same registry feeds the telemetry samples of device `<edge_id>` and the optional
 * Prometheus endpoint (health.ts, prometheus_endpoint.ts).
 */

export type MetricLabels = Record<string, string>;

/** Something that happens: logged at `level` (debug for routine events) and added to `counter`. */
export interface EventSpec {
  counter: string;
  help: string;
  /** Labels every emission of this event carries (e.g. `result: "ok"`). */
  labels?: MetricLabels;
  level: LogLevel;
  message: string;
}

/** A state that lasts: logged when it starts (at `level`) and when it ends (at info). */
export interface ConditionSpec {
  /** Label value of `kwollector_conditions_active{condition=...}`. */
  name: string;
  level: LogLevel;
  started: string;
  ended: string;
  /** Log with the end how many times the condition was met while it lasted (bad lines ...). */
  countsOccurrences?: boolean;
}

/** A value measured now (spool rows, oldest unsent age ...). */
export interface GaugeSpec {
  name: string;
  help: string;
}

export interface MetricPoint {
  name: string;
  help: string;
  type: "counter" | "gauge";
  labels: MetricLabels;
  value: number;
}

interface ActiveCondition {
  sinceMs: number;
  detail: string | undefined;
  occurrences: number;
}

const CONDITIONS_ACTIVE: GaugeSpec = {
  name: "kwollector_conditions_active",
  help: "Conditions in progress (device failing, central database unreachable, spool full ...), by condition",
};

export class Telemetry {
  #points = new Map<string, MetricPoint>();
  #conditions = new Map<string, Map<string, ActiveCondition>>();
  #knownConditions = new Set<string>();
  #now: () => number;

  /** `now`: monotonic milliseconds (tests pass a fake clock's). */
  constructor(opts: { now?: () => number; conditions?: readonly ConditionSpec[] } = {}) {
    // Durations are measured on the monotonic clock: a wall-clock step must not skew them.
    this.#now = opts.now ?? (() => performance.now());
    for (const c of opts.conditions ?? []) this.#knownConditions.add(c.name);
  }

  /** Logs `event` with `fields` and adds `n` to its counter (with the event's and the given labels). */
  emit(event: EventSpec, fields: Record<string, unknown> = {}, opts: { labels?: MetricLabels; n?: number } = {}): void {
    const labels = opts.labels ? { ...event.labels, ...opts.labels } : event.labels ?? {};
    this.#add(event.counter, event.help, "counter", labels, opts.n ?? 1);
    log(event.level, event.message, fields);
  }

  /**
   * Marks condition `spec` as active for `key` (a device group, an endpoint ...). Logs only when
   * it starts, or when its `detail` (usually the error) changes while it lasts.
   */
  begin(
    spec: ConditionSpec,
    key: string,
    fields: Record<string, unknown> = {},
    detail?: string,
    /** When it really began (monotonic), if before now: a failure noticed only after a timeout. */
    sinceMs?: number,
  ): void {
    this.#knownConditions.add(spec.name);
    let active = this.#conditions.get(spec.name);
    if (!active) this.#conditions.set(spec.name, active = new Map());
    const current = active.get(key);
    if (current === undefined) {
      active.set(key, { sinceMs: Math.min(sinceMs ?? Infinity, this.#now()), detail, occurrences: 1 });
      log(spec.level, spec.started, fields);
      return;
    }
    current.occurrences++;
    if (current.detail !== detail) {
      current.detail = detail;
      log(spec.level, `${spec.started} (changed)`, fields);
    }
  }

  /** Ends condition `spec` for `key` if it was active; logs how long it lasted. */
  end(spec: ConditionSpec, key: string, fields: Record<string, unknown> = {}): void {
    const active = this.#conditions.get(spec.name);
    const current = active?.get(key);
    if (!active || current === undefined) return;
    active.delete(key);
    log("info", spec.ended, {
      ...fields,
      ...(spec.countsOccurrences && { occurrences: current.occurrences }),
      lasted_s: Math.round((this.#now() - current.sinceMs) / 1000),
    });
  }

  isActive(spec: ConditionSpec, key: string): boolean {
    return this.#conditions.get(spec.name)?.has(key) ?? false;
  }

  /** Sets a gauge to its current value. */
  set(spec: GaugeSpec, value: number, labels: MetricLabels = {}): void {
    const id = pointId(spec.name, labels);
    const point = this.#points.get(id);
    if (point) point.value = value;
    else this.#points.set(id, { name: spec.name, help: spec.help, type: "gauge", labels, value });
  }

  /** The value of a counter or gauge (0 when it was never counted). */
  value(name: string, labels: MetricLabels = {}): number {
    return this.#points.get(pointId(name, labels))?.value ?? 0;
  }

  /** Sum of a counter or gauge over all its label sets. */
  total(name: string): number {
    let sum = 0;
    for (const p of this.#points.values()) if (p.name === name) sum += p.value;
    return sum;
  }

  /** Every counter and gauge, plus the number of active keys of each condition. */
  snapshot(): MetricPoint[] {
    const points = [...this.#points.values()].map((p) => ({ ...p }));
    for (const name of [...this.#knownConditions].sort()) {
      points.push({
        name: CONDITIONS_ACTIVE.name,
        help: CONDITIONS_ACTIVE.help,
        type: "gauge",
        labels: { condition: name },
        value: this.#conditions.get(name)?.size ?? 0,
      });
    }
    return points;
  }

  #add(name: string, help: string, type: "counter", labels: MetricLabels, n: number): void {
    const id = pointId(name, labels);
    const point = this.#points.get(id);
    if (point) point.value += n;
    else this.#points.set(id, { name, help, type, labels, value: n });
  }
}

function pointId(name: string, labels: MetricLabels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return name;
  return name + "\u0000" + keys.sort().map((k) => `${k}=${labels[k]}`).join("\u0000");
}
