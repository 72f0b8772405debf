/**
 * Reading a text body a device may make hostile (a Prometheus exporter's answer):
 * - as a stream, never held whole: each chunk is decoded (UTF-8, characters split across
 *   chunks included) and handed on in pieces of at most PIECE_BYTES bytes;
 * - into one buffer of READ_BUFFER_BYTES, reused for every read of the body (a byte stream read
 *   with a BYOB reader, as fetch's bodies are): a default reader hands over a new buffer per
 *   chunk, memory outside the JS heap that is freed only when the garbage collector runs, and in
 *   between the C heap grew by tens of MB per large scrape (measured: PERFORMANCE.md, "hostile
 *   third round");
 * - at most `maxBytes` bytes of it: one more and the read stops, the stream is cancelled (the
 *   connection let go, the rest never produced) and `tooLarge()` is thrown;
 * - in time slices (src/time_slice.ts): after each piece, once a slice is spent, the event loop
 *   gets a turn, so other timers fire on time while a large body is processed, even when the whole
 *   body is already buffered and every read resolves at once. The work of `onText` (parsing,
 *   building readings) counts in the slice;
 * - at the pace of its taker: when `onText` returns a promise (readings handed over, waiting for
 *   the spool), the next piece is read once it resolves.
 */
import { TimeSlice } from "../../time_slice.ts";
/** Largest piece of a chunk decoded and handed on between two looks at the clock, in bytes. */
export const PIECE_BYTES = 16 * 1024;
/** The buffer each read of a body fills. */
export const READ_BUFFER_BYTES = 64 * 1024;

export interface TextStreamOptions {
  maxBytes: number;
  /** Aborts the read between two slices (the poll's timeout). */
  signal: AbortSignal;
  /** Takes the next piece of text; the read goes on once the promise it may return resolves. */
  onText(text: string): void | Promise<void>;
  /** The error thrown when the body goes past `maxBytes`. */
  tooLarge(): Error;
}

export async function consumeText(body: ReadableStream<Uint8Array>, opts: TextStreamOptions): Promise<void> {
  const decoder = new TextDecoder();
  const reader = body.getReader({ mode: "byob" });
  let buffer = new ArrayBuffer(READ_BUFFER_BYTES);
  let bytes = 0;
  const slice = new TimeSlice();
  try {
    for (;;) {
      const { value, done } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      buffer = value.buffer as ArrayBuffer;
      bytes += value.length;
      if (bytes > opts.maxBytes) throw opts.tooLarge();
      for (let at = 0; at < value.length; at += PIECE_BYTES) {
        const taken = opts.onText(decoder.decode(value.subarray(at, at + PIECE_BYTES), { stream: true }));
        if (taken) {
          await taken;
          opts.signal.throwIfAborted();
        }
        if (slice.due()) {
          await slice.yield();
          opts.signal.throwIfAborted();
        }
      }
    }
    await opts.onText(decoder.decode());
  } finally {
    // Stopped early (a limit, an abort, an error of onText): let the body go unread.
    await reader.cancel().catch(() => {});
  }
}
