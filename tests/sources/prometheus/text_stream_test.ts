import assert from "node:assert/strict";
import { consumeText, PIECE_BYTES } from "../../../src/sources/prometheus/text_stream.ts";
import { type LineError, PrometheusTextParser } from "../../../src/sources/prometheus/text_parser.ts";
import { collecting, type Parsed } from "./parsed.ts";

/**
 * A body whose chunks are all there at once: every read resolves without waiting for I/O. A byte
 * stream, as fetch's bodies are.
 */
function buffered(chunks: Uint8Array[]): { body: ReadableStream<Uint8Array>; cancelled(): boolean } {
  let next = 0;
  let cancelled = false;
  const body: ReadableStream<Uint8Array> = new ReadableStream({
    type: "bytes",
    pull(controller) {
      // A copy: a byte stream takes over (detaches) the buffer of what it is given.
      if (next < chunks.length) controller.enqueue(chunks[next++]!.slice());
      else {
        // A byte stream's source closes and then answers the pending read with nothing (the spec's rule).
        controller.close();
        controller.byobRequest?.respond(0);
      }
    },
    cancel() {
      cancelled = true;
    },
  });
  return { body, cancelled: () => cancelled };
}

const tooLarge = () => new Error("too large");

Deno.test("consumeText() lets timers run while it works through a body that is already all there", async () => {
  // 16 MB of exposition text, 50,000 series of it selected: the largest scrape the defaults
  // accept. Parsing it takes hundreds of milliseconds; done in one go, no timer would run.
  const encoder = new TextEncoder();
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for (let i = 0; bytes < 16_000_000; i++) {
    const lines = Array.from({ length: 1000 }, (_, n) => {
      const id = i * 1000 + n;
      return id < 50_000 ? `selected{id="${id}"} ${n}\n` : `other_metric{id="${id}",host="node-${n}"} ${n}\n`;
    });
    const chunk = encoder.encode(lines.join(""));
    chunks.push(chunk);
    bytes += chunk.length;
  }
  const parser = new PrometheusTextParser(new Set(["selected"]));
  const samples: Parsed[] = [];
  const sink = { sample: collecting(samples), error: (e: LineError) => assert.fail(e.message) };
  let ticks = 0;
  let reading = true;
  const tick = () => {
    ticks++;
    if (reading) setTimeout(tick, 0);
  };
  setTimeout(tick, 0);
  await consumeText(buffered(chunks).body, {
    maxBytes: 16 * 1024 * 1024,
    signal: new AbortController().signal,
    onText: (text) => parser.push(text, sink),
    tooLarge,
  });
  reading = false;
  parser.end(sink);
  assert.equal(samples.length, 50_000);
  // Each turn the reader gave the event loop let the timer run; in one go it would be 0.
  assert.ok(ticks >= 2, `the timer ran ${ticks} times during the read`);
  await new Promise((r) => setTimeout(r, 0));
});

Deno.test("consumeText() stops at maxBytes and cancels the body", async () => {
  const chunk = new Uint8Array(1000).fill(0x61);
  const { body, cancelled } = buffered(Array.from({ length: 100 }, () => chunk));
  let received = 0;
  await assert.rejects(
    consumeText(body, {
      maxBytes: 10_500,
      signal: new AbortController().signal,
      onText: (text) => {
        received += text.length;
      },
      tooLarge,
    }),
    /too large/,
  );
  assert.equal(received, 10_000);
  assert.ok(cancelled(), "the body was not cancelled");
});

Deno.test("consumeText() decodes characters split across chunks and hands on pieces of at most PIECE_BYTES", async () => {
  const text = "é€😀".repeat(PIECE_BYTES);
  const bytes = new TextEncoder().encode(text);
  const chunks = [bytes.subarray(0, 1), bytes.subarray(1, 5), bytes.subarray(5)];
  const pieces: string[] = [];
  await consumeText(buffered(chunks).body, {
    maxBytes: bytes.length,
    signal: new AbortController().signal,
    onText: (t) => {
      pieces.push(t);
    },
    tooLarge,
  });
  assert.equal(pieces.join(""), text);
  for (const piece of pieces) assert.ok(new TextEncoder().encode(piece).length <= PIECE_BYTES + 3);
});

Deno.test("consumeText() stops between slices when its signal aborts", async () => {
  const chunk = new Uint8Array(PIECE_BYTES).fill(0x61);
  const { body, cancelled } = buffered(Array.from({ length: 1000 }, () => chunk));
  const abort = new AbortController();
  await assert.rejects(
    consumeText(body, {
      maxBytes: Infinity,
      signal: abort.signal,
      onText: () => {
        // Work that fills a slice at once, after which the reader looks at the signal.
        const until = performance.now() + 20;
        while (performance.now() < until) { /* busy */ }
        abort.abort(new Error("timed out"));
      },
      tooLarge,
    }),
    /timed out/,
  );
  assert.ok(cancelled());
});
