/**
 * A Prometheus exporter for tests whose value counts its own scrapes: every served value is
 * recorded, so a test can check that each one reached the central table exactly once.
 */
export interface CountingExporter {
  port: number;
  /** Values served so far, in order (1, 2, 3, ...). */
  served(): number;
  close(): Promise<void>;
}

export function startCountingExporter(opts: { extra?: string } = {}): CountingExporter {
  let count = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    count++;
    const body = [
      "# HELP scrape_count Scrapes served by this exporter",
      "# TYPE scrape_count counter",
      `scrape_count ${count}`,
      opts.extra ?? "",
    ].join("\n");
    return new Response(body + "\n", { headers: { "content-type": "text/plain; version=0.0.4" } });
  });
  return {
    port: server.addr.port,
    served: () => count,
    close: () => server.shutdown(),
  };
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

export interface HostileExporter {
  port: number;
  /** The URL the collector scrapes, as its errors name it. */
  url: string;
  /** Size of the body as sent on the wire, when it is prepared in advance (0 otherwise). */
  bodyBytes: number;
  /** Bytes of streamed bodies handed to the server so far. */
  bytesSent(): number;
  /** Requests received. */
  requests(): number;
  /** Resolves when the client gave up a streamed body before its end. */
  cancelled: Promise<void>;
  close(): Promise<void>;
}

/** A hostile Prometheus exporter on 127.0.0.1 (see HostileBehaviour). */
export async function startHostileExporter(behaviour: HostileBehaviour): Promise<HostileExporter> {
  const encoder = new TextEncoder();
  let sent = 0;
  let requests = 0;
  let onCancel = () => {};
  const cancelled = new Promise<void>((resolve) => onCancel = resolve);
  const text = { "content-type": "text/plain; version=0.0.4" };
  let body: Uint8Array<ArrayBuffer> | undefined;
  if (behaviour.kind === "series") {
    const lines = Array.from({ length: behaviour.series }, (_, i) => `series_a{i="${i}"} 1\n`);
    body = encoder.encode(lines.join("") + "other_metric 7\n");
  } else if (behaviour.kind === "gzip-bomb") {
    body = await gzipZeros(behaviour.decodedBytes);
  } else if (behaviour.kind === "encoding") {
    body = encoder.encode("a 1\n");
  } else if (behaviour.kind === "malformed") {
    body = encoder.encode("ok 1\n" + "{broken} 1\n".repeat(behaviour.lines));
  }
  /** Streams `pieces()` as they are read, counting them, and notes a client that gives up. */
  const stream = (pieces: () => Generator<Uint8Array>) => {
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
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    requests++;
    switch (behaviour.kind) {
      case "endless":
        return new Response(stream(() => endless(behaviour.totalBytes)), { headers: text });
      case "long-line":
        return new Response(stream(() => longLine(behaviour.lineChars)), { headers: text });
      case "gzip-bomb":
        return new Response(body, { headers: { ...text, "content-encoding": "gzip" } });
      case "encoding":
        return new Response(body, { headers: { ...text, "content-encoding": behaviour.encoding } });
      default:
        return new Response(body, { headers: text });
    }
  });
  const port = server.addr.port;
  return {
    port,
    url: `http://127.0.0.1:${port}/metrics`,
    bodyBytes: body?.length ?? 0,
    bytesSent: () => sent,
    requests: () => requests,
    cancelled,
    close: () => server.shutdown(),
  };
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
