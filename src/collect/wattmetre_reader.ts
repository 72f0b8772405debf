import { errorMessage, logger } from "../log.ts";
import { SAMPLES_LOST, wattmeterConditions } from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { type Labels, type Sample, timestampProblem } from "../sample.ts";

/**
 * The OmegaWatt wattmeter stream (`wattmetre-read /dev/ttyUSB0 42 20 | kwollector wattmetre`),
 * turned into samples as Kwollect's kwollector-wattmetre did. A producer, not a Source: nothing
 * polls it, the stream pushes; like the scheduler, it only gets a `deliver` function that hands a
 * batch on and resolves once it is durable.
 *
 * Input, one CSV line per frame (about 50 per second): fields 1 and 2 are ignored, field 3 is
 * the time in epoch seconds with a fraction, field 4 must be `OK` (other lines are dropped), and
 * fields 5, 6, ... are the power in W of ports 0, 1, ...; an empty field is no value.
 *
 * Output: samples of `wattmetre_power_watt` for device `<wattmetre_id>-port<N>`, with label
 * `_device_alias: <node>` when the mapping file (config/wattmetre_mapping.ts) names the one node
 * the port powers. A port the mapping gives to several nodes (a PSU shared by the nodes of one
 * chassis, as Grid'5000's generator writes it) measures all of them together: its samples get no
 * `_device_alias`, as Grid'5000's generator does for a PDU outlet shared by several nodes, so no
 * node is credited with the others' power. Lines are grouped by whole second; when a line of
 * another second arrives, the finished second is delivered as one batch. In it, a port whose node
 * (any of its nodes) is promoted (a promoted_metrics row for the node matches
 * `wattmetre_power_watt`, checked once per second) has every raw sample with its own timestamp;
 * every other port has one sample, the mean of the second, stamped with the whole second.
 *
 * A bad line never stops the stream: it is dropped and counted, and each kind of trouble
 * (malformed lines, lines not OK, skipped seconds, time going backwards, spool failures) is
 * logged when it starts and when it ends, not per line.
 */

export const WATTMETRE_METRIC = "wattmetre_power_watt";

/** Seconds without a gap after which a gappy stream is reported continuous again. */
const GAP_QUIET_SECONDS = 60;
/**
 * Default bound on delivered seconds not yet durable: it bounds memory when the spool stalls, and
 * lets a backlog (input buffered while the spool was slow) drain many seconds per commit.
 */
const DEFAULT_MAX_PENDING_SECONDS = 20;
/** Longest excerpt of a bad line quoted in a log message. */
const EXCERPT_CHARS = 120;
/** Longest line kept from the stream (a wattmeter line is about 10 characters per port). */
const MAX_LINE_CHARS = 65_536;

export interface WattmetreReaderOptions {
  wattmetreId: string;
  /** Port device id (`<wattmetre_id>-port<N>`) → the nodes it powers (usually one). */
  mapping: ReadonlyMap<string, readonly string[]>;
  /** Whether the node's samples are kept raw (promoted) instead of averaged per second. */
  isPromoted(node: string): boolean;
  /** Hands a batch to the spool; resolves once it is durable. */
  deliver(samples: Sample[]): Promise<void>;
  /** Delivered seconds awaiting their commit beyond which `pushLine` asks the caller to wait. */
  maxPendingSeconds?: number;
  /** Where the stream's troubles are logged and counted (a private one by default). */
  telemetry?: Telemetry;
}

export interface WattmetreCounters {
  /** Non-empty lines read. */
  lines: number;
  linesMalformed: number;
  linesNotOk: number;
  /** Whole seconds with no line, between two lines. */
  secondsSkipped: number;
  /** Lines whose second is earlier than the one before. */
  timeSteps: number;
  samplesAcknowledged: number;
  samplesLost: number;
}

interface Port {
  deviceId: string;
  labels: Labels;
  nodes: readonly string[];
  sum: number;
  count: number;
  promoted: boolean;
}

export class WattmetreReader {
  readonly counters: WattmetreCounters = {
    lines: 0,
    linesMalformed: 0,
    linesNotOk: 0,
    secondsSkipped: 0,
    timeSteps: 0,
    samplesAcknowledged: 0,
    samplesLost: 0,
  };
  #opts: WattmetreReaderOptions;
  #ports: Port[] = [];
  #second: number | undefined;
  #raw: Sample[] = [];
  #values: (number | undefined)[] = [];
  #secondsSinceGap = 0;
  #pending = new Set<Promise<void>>();
  #telemetry: Telemetry;
  #conditions: ReturnType<typeof wattmeterConditions>;

  constructor(opts: WattmetreReaderOptions) {
    this.#opts = opts;
    this.#telemetry = opts.telemetry ?? new Telemetry();
    this.#conditions = wattmeterConditions(opts.wattmetreId);
  }

  /** Notes one more occurrence of a trouble; only its start is logged. */
  #hit(kind: keyof ReturnType<typeof wattmeterConditions>, fields: Record<string, unknown>): void {
    this.#telemetry.begin(this.#conditions[kind], this.#opts.wattmetreId, fields);
  }

  /** The trouble is over: logged with how many times it occurred. */
  #clear(kind: keyof ReturnType<typeof wattmeterConditions>): void {
    this.#telemetry.end(this.#conditions[kind], this.#opts.wattmetreId);
  }

  /**
   * Takes one line of the stream. Returns a promise when too many delivered seconds are still
   * waiting for the spool: the caller should await it before reading on (backpressure).
   */
  pushLine(line: string): Promise<void> | undefined {
    const text = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (text.trim() === "") return undefined;
    this.counters.lines++;
    const fields = text.split(",");
    if (fields.length <= 4) {
      return this.#reject(text, `expected more than 4 comma-separated fields, found ${fields.length}`);
    }
    const timeText = fields[2]!.trim();
    const seconds = Number(timeText);
    if (timeText === "" || !Number.isFinite(seconds) || seconds < 0) {
      return this.#reject(text, `field 3 '${timeText}' is not a time in epoch seconds`);
    }
    const outOfRange = timestampProblem(seconds, "seconds", Date.now());
    if (outOfRange) return this.#reject(text, `field 3: ${outOfRange}`);
    const values = this.#values;
    values.length = fields.length - 4;
    for (let i = 4; i < fields.length; i++) {
      const f = fields[i]!;
      const v = f === "" ? undefined : Number(f);
      if (v !== undefined && Number.isNaN(v)) {
        const t = f.trim();
        if (t !== "" && t.toLowerCase() !== "nan") return this.#reject(text, `field ${i + 1} '${f}' is not a number`);
        values[i - 4] = t === "" ? undefined : NaN;
      } else values[i - 4] = f.trim() === "" ? undefined : v;
    }
    if (fields[3]!.trim() !== "OK") {
      this.counters.linesNotOk++;
      this.#hit("notOk", { status: fields[3]!.trim(), line: excerpt(text) });
      return undefined;
    }
    this.#clear("malformed");
    this.#clear("notOk");

    const second = Math.floor(seconds);
    let waiting: Promise<void> | undefined;
    if (this.#second === undefined) this.#second = second;
    else if (second !== this.#second) {
      waiting = this.#flush();
      this.#noteStep(this.#second, second);
      this.#second = second;
    }
    const timestampMs = seconds * 1000;
    for (let p = 0; p < values.length; p++) {
      const v = values[p];
      if (v === undefined) continue;
      const port = this.#port(p);
      if (port.promoted) {
        this.#raw.push({
          timestampMs,
          deviceId: port.deviceId,
          metricId: WATTMETRE_METRIC,
          value: v,
          labels: port.labels,
        });
      } else {
        port.sum += v;
        port.count++;
      }
    }
    return waiting;
  }

  /** Delivers the last second and waits until every delivered sample is acknowledged. */
  async end(): Promise<void> {
    if (this.#second !== undefined) this.#flush();
    this.#second = undefined;
    while (this.#pending.size > 0) await Promise.all(this.#pending);
  }

  #port(p: number): Port {
    let port = this.#ports[p];
    if (!port) {
      for (let q = this.#ports.length; q <= p; q++) {
        const deviceId = `${this.#opts.wattmetreId}-port${q}`;
        const nodes = this.#opts.mapping.get(deviceId) ?? [];
        const created: Port = {
          deviceId,
          labels: nodes.length === 1 ? { _device_alias: nodes[0] } : {},
          nodes,
          sum: 0,
          count: 0,
          promoted: nodes.some((n) => this.#opts.isPromoted(n)),
        };
        this.#ports.push(created);
      }
      port = this.#ports[p]!;
    }
    return port;
  }

  /** Delivers the current second: raw samples of promoted ports, means of the others. */
  #flush(): Promise<void> | undefined {
    const samples = this.#raw;
    this.#raw = [];
    const timestampMs = this.#second! * 1000;
    for (const port of this.#ports) {
      if (port.count > 0) {
        samples.push({
          timestampMs,
          deviceId: port.deviceId,
          metricId: WATTMETRE_METRIC,
          value: port.sum / port.count,
          labels: port.labels,
        });
      }
      port.sum = 0;
      port.count = 0;
      // Promotion is decided once per second, for the second that starts now.
      port.promoted = port.nodes.some((n) => this.#opts.isPromoted(n));
    }
    if (samples.length > 0) this.#deliver(samples);
    const limit = this.#opts.maxPendingSeconds ?? DEFAULT_MAX_PENDING_SECONDS;
    return this.#pending.size >= limit ? Promise.race(this.#pending) : undefined;
  }

  #deliver(samples: Sample[]): void {
    const n = samples.length;
    const delivery = this.#opts.deliver(samples).then(
      () => {
        this.counters.samplesAcknowledged += n;
        this.#clear("spoolFailing");
      },
      (err) => {
        this.counters.samplesLost += n;
        const fields = { samples: n, error: errorMessage(err) };
        this.#telemetry.emit(SAMPLES_LOST, fields, { labels: { protocol: "wattmetre" }, n });
        this.#hit("spoolFailing", fields);
      },
    );
    this.#pending.add(delivery);
    delivery.finally(() => this.#pending.delete(delivery));
  }

  #noteStep(previous: number, next: number): void {
    if (next < previous) {
      this.counters.timeSteps++;
      this.#hit("backwards", { from: isoSecond(previous), to: isoSecond(next) });
      return;
    }
    this.#clear("backwards");
    const skipped = next - previous - 1;
    if (skipped > 0) {
      this.counters.secondsSkipped += skipped;
      this.#secondsSinceGap = 0;
      this.#hit("gaps", { skipped_s: skipped, after: isoSecond(previous), before: isoSecond(next) });
    } else if (++this.#secondsSinceGap >= GAP_QUIET_SECONDS) {
      this.#clear("gaps");
    }
  }

  #reject(text: string, reason: string): undefined {
    this.counters.linesMalformed++;
    this.#hit("malformed", { reason, line: excerpt(text) });
    return undefined;
  }
}

/**
 * Feeds `reader` with the lines of `stream` (wattmetre-read's stdout) until it ends or `signal`
 * aborts, waiting whenever the reader asks to, then ends the reader so every sample is durable.
 * A last line without its newline was cut short (the writer died mid-line): it is dropped.
 */
export async function pumpWattmetreStream(
  stream: ReadableStream<Uint8Array>,
  reader: WattmetreReader,
  signal?: AbortSignal,
): Promise<void> {
  const text = stream.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => void text.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let rest = "";
  /** In the middle of a line too long to keep: its end is dropped too. */
  let skipping = false;
  try {
    for (;;) {
      const { value, done } = await text.read();
      if (done) break;
      const lines = (rest + value).split("\n");
      rest = lines.pop()!;
      if (skipping && lines.length > 0) {
        lines.shift();
        skipping = false;
      }
      for (const line of lines) await reader.pushLine(line);
      if (rest.length > MAX_LINE_CHARS) {
        logger.warning("Wattmeter stream sent a line longer than the longest accepted: dropped", {
          max_chars: MAX_LINE_CHARS,
          line: excerpt(rest),
        });
        rest = "";
        skipping = true;
      }
    }
    if (rest !== "" && !skipping && !signal?.aborted) {
      logger.warning("Wattmeter stream ended in the middle of a line: line dropped", { line: excerpt(rest) });
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await reader.end();
  }
}

function excerpt(text: string): string {
  return text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…` : text;
}

function isoSecond(second: number): string {
  return new Date(second * 1000).toISOString();
}
