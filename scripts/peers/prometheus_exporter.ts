/**
 * The Prometheus exporter that tests, benchmarks and the demo poll: an HTTP server on 127.0.0.1
 * (or `hostname`) that answers its n-th request (n = 1, 2, 3, ...) with the exposition `body(n)`.
 * It records when each scrape arrived and can hold its answers back (a poll then stays in
 * flight). Its bodies:
 * - counting (startCountingExporter): every value it serves is n, so every sample names the
 *   scrape it came from: a missing value is a poll that never arrived, a repeated one a duplicate;
 * - fixed (fixedBody): the same prepared text at every scrape, for benchmarks;
 * - hostile (startHostileExporter): streamed without end, too wide, compressed, broken;
 * - any other, e.g. the demo's changing temperatures.
 */

/** What the exporter sends for one scrape. */
export interface Exposition {
  /** Text, bytes, or pieces produced as they are read (then chunked, without Content-Length). */
  body: string | Uint8Array<ArrayBuffer> | (() => Iterator<Uint8Array>);
  /** Content-Encoding of the body, when it is encoded. */
  encoding?: string;
  /** HTTP status (200 by default). */
  status?: number;
}

export interface ExporterOptions {
  /** Where it listens (127.0.0.1 unless a collector polls it from a network namespace). */
  hostname?: string;
  /** What scrape n gets. */
  body: (n: number) => string | Exposition;
}

export interface Exporter {
  hostname: string;
  port: number;
  /** The URL the collector scrapes, as its errors name it. */
  url: string;
  /** Scrapes received so far: the number of the last one. */
  served(): number;
  /** When scrape n arrived, in this process' monotonic and wall-clock milliseconds. */
  servedAt(n: number): { monoMs: number; wallMs: number } | undefined;
  /** Requests received and not yet answered. */
  inFlight(): number;
  /** Holds every answer back by `ms` (a poll then stays in flight that long). */
  setDelay(ms: number): void;
  /** Resolves when the next request arrives, with its number. */
  nextRequest(): Promise<number>;
  /** Bytes of streamed bodies handed to the server so far. */
  bytesSent(): number;
  /** Resolves when a client gave up a streamed body before its end. */
  cancelled: Promise<void>;
  close(): Promise<void>;
}

const TEXT_FORMAT = { "content-type": "text/plain; version=0.0.4" };

export function startExporter(opts: ExporterOptions): Exporter {
  const hostname = opts.hostname ?? "127.0.0.1";
  const body = opts.body;
  let count = 0;
  let inFlight = 0;
  let delayMs = 0;
  let sent = 0;
  const monos: number[] = [];
  const walls: number[] = [];
  let waiters: ((n: number) => void)[] = [];
  let onCancel = () => {};
  const cancelled = new Promise<void>((resolve) => onCancel = resolve);
  /** Streams `pieces()` as they are read, counting them, and notes a client that gives up. */
  const stream = (pieces: () => Iterator<Uint8Array>) => {
    const it = pieces();
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = it.next();
        if (next.done) return controller.close();
        sent += next.value.length;
        controller.enqueue(next.value);
      },
      cancel: () => onCancel(),
    }, { highWaterMark: 0 });
  };
  const server = Deno.serve({ hostname, port: 0, onListen: () => {} }, async () => {
    const n = ++count;
    monos[n] = performance.now();
    walls[n] = Date.now();
    inFlight++;
    const arrived = waiters;
    waiters = [];
    for (const w of arrived) w(n);
    try {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      const answer = body(n);
      const exposition = typeof answer === "string" ? { body: answer } : answer;
      const headers = { ...TEXT_FORMAT, ...(exposition.encoding && { "content-encoding": exposition.encoding }) };
      const content = typeof exposition.body === "function" ? stream(exposition.body) : exposition.body;
      return new Response(content, { headers, status: exposition.status ?? 200 });
    } finally {
      inFlight--;
    }
  });
  const port = server.addr.port;
  return {
    hostname,
    port,
    url: `http://${hostname}:${port}/metrics`,
    served: () => count,
    servedAt: (n) => {
      const monoMs = monos[n];
      const wallMs = walls[n];
      return monoMs === undefined || wallMs === undefined ? undefined : { monoMs, wallMs };
    },
    inFlight: () => inFlight,
    setDelay: (ms) => {
      delayMs = ms;
    },
    nextRequest: () => new Promise((resolve) => waiters.push(resolve)),
    bytesSent: () => sent,
    cancelled,
    close: () => server.shutdown(),
  };
}

/** An exporter whose every scrape yields `series` samples of value n (the scrape's number). */
export type CountingExporter = Exporter & { series: number };

/**
 * An exporter of the counting body: `scrape_count n`, then `bulk{i="1"} n` ...
 * `bulk{i="<series-1>"} n`, then `extraLines` as they are.
 */
export function startCountingExporter(
  opts: { hostname?: string; series?: number; extraLines?: readonly string[] } = {},
): CountingExporter {
  const series = opts.series ?? 1;
  const body = (n: number) => {
    const lines = ["# HELP scrape_count Scrapes served by this exporter", "# TYPE scrape_count counter"];
    lines.push(`scrape_count ${n}`);
    for (let i = 1; i < series; i++) lines.push(`bulk{i="${i}"} ${n}`);
    lines.push(...opts.extraLines ?? []);
    return lines.join("\n") + "\n";
  };
  return { ...startExporter({ ...(opts.hostname && { hostname: opts.hostname }), body }), series };
}

/** The same text at every scrape, prepared once (benchmarks: no per-scrape work in the exporter). */
export function fixedBody(lines: readonly string[]): () => string {
  const text = lines.join("\n") + "\n";
  return () => text;
}

/** What a hostile exporter sends, always in the text exposition format unless said otherwise. */
export type HostileBehaviour =
  /** `totalBytes` of series no entry selects, produced as they are read, chunked (no Content-Length). */
  | { kind: "endless"; totalBytes: number }
  /** `series` series of `series_a` and one `other_metric 7`, with a Content-Length. */
  | { kind: "series"; series: number }
  /** A gzip body that decodes to `decodedBytes` (zeros), Content-Encoding: gzip whatever was asked. */
  | { kind: "gzip-bomb"; decodedBytes: number }
  /** A body in an encoding nobody asked for. */
  | { kind: "encoding"; encoding: string }
  /** `before 1`, a line of `lineChars` characters without end, then `after 2`; chunked. */
  | { kind: "long-line"; lineChars: number }
  /** `ok 1` then `lines` malformed lines. */
  | { kind: "malformed"; lines: number };

/** A hostile exporter, with the size of its body when it is prepared in advance (0 otherwise). */
export type HostileExporter = Exporter & { bodyBytes: number };

/** An exporter that answers every scrape with a hostile body (see HostileBehaviour). */
export async function startHostileExporter(behaviour: HostileBehaviour): Promise<HostileExporter> {
  const exposition = await hostileExposition(behaviour);
  const exporter = startExporter({ body: () => exposition });
  return { ...exporter, bodyBytes: exposition.body instanceof Uint8Array ? exposition.body.length : 0 };
}

async function hostileExposition(behaviour: HostileBehaviour): Promise<Exposition> {
  const encoder = new TextEncoder();
  switch (behaviour.kind) {
    case "endless":
      return { body: () => endless(behaviour.totalBytes) };
    case "long-line":
      return { body: () => longLine(behaviour.lineChars) };
    case "series": {
      const lines = Array.from({ length: behaviour.series }, (_, i) => `series_a{i="${i}"} 1\n`);
      return { body: encoder.encode(lines.join("") + "other_metric 7\n") };
    }
    case "gzip-bomb":
      return { body: await gzipZeros(behaviour.decodedBytes), encoding: "gzip" };
    case "encoding":
      return { body: encoder.encode("a 1\n"), encoding: behaviour.encoding };
    case "malformed":
      return { body: encoder.encode("ok 1\n" + "{broken} 1\n".repeat(behaviour.lines)) };
  }
}

function* endless(totalBytes: number): Generator<Uint8Array> {
  const encoder = new TextEncoder();
  for (let sent = 0, i = 0; sent < totalBytes; i++) {
    const lines: string[] = [];
    for (let n = 0; n < 1000; n++) lines.push(`unselected_metric{id="${i * 1000 + n}"} ${n}\n`);
    const chunk = encoder.encode(lines.join(""));
    sent += chunk.length;
    yield chunk;
  }
}

function* longLine(lineChars: number): Generator<Uint8Array> {
  const encoder = new TextEncoder();
  yield encoder.encode('before 1\nlong{x="');
  const piece = encoder.encode("y".repeat(16 * 1024));
  for (let n = 0; n < lineChars; n += piece.length) yield piece;
  yield encoder.encode('"} 3\nafter 2\n');
}

/** A gzip body that decodes to `decodedBytes` zeros (about a thousandth of that on the wire). */
async function gzipZeros(decodedBytes: number): Promise<Uint8Array<ArrayBuffer>> {
  const zeros = new Uint8Array(1024 * 1024);
  let left = decodedBytes;
  const input = new ReadableStream<BufferSource>({
    pull(controller) {
      if (left <= 0) return controller.close();
      const n = Math.min(left, zeros.length);
      left -= n;
      controller.enqueue(zeros.subarray(0, n));
    },
  });
  return new Uint8Array(await new Response(input.pipeThrough(new CompressionStream("gzip"))).arrayBuffer());
}
