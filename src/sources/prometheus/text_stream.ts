/**
 * Reading a text body a device may make hostile (a Prometheus exporter's answer):
 * - as a stream, never held whole: each chunk is decoded (UTF-8, characters split across
 *   chunks included) and handed on in pieces of at most PIECE_BYTES bytes;
 * - at most `maxBytes` bytes of it: one more and the read stops, the stream is cancelled (the
 *   connection let go, the rest never produced) and `tooLarge()` is thrown;
 * - in time slices (src/time_slice.ts): after each piece, once a slice is spent, the event loop
 *   gets a turn, so other timers fire on time while a large body is processed, even when the whole
 *   body is already buffered and every read resolves at once. The work of `onText` (parsing,
 *   building readings) counts in the slice.
 */
import { TimeSlice } from "../../time_slice.ts";
/** Largest piece of a chunk decoded and handed on between two looks at the clock, in bytes. */
export const PIECE_BYTES = 16 * 1024;

export interface TextStreamOptions {
  maxBytes: number;
  /** Aborts the read between two slices (the poll's timeout). */
  signal: AbortSignal;
  /** Takes the next piece of text. */
  onText(text: string): void;
  /** The error thrown when the body goes past `maxBytes`. */
  tooLarge(): Error;
}

export async function consumeText(body: ReadableStream<Uint8Array>, opts: TextStreamOptions): Promise<void> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let bytes = 0;
  const slice = new TimeSlice();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
      if (bytes > opts.maxBytes) throw opts.tooLarge();
      for (let at = 0; at < value.length; at += PIECE_BYTES) {
        opts.onText(decoder.decode(value.subarray(at, at + PIECE_BYTES), { stream: true }));
        if (slice.due()) {
          await slice.yield();
          opts.signal.throwIfAborted();
        }
      }
    }
    opts.onText(decoder.decode());
  } finally {
    // Stopped early (a limit, an abort, an error of onText): let the body go unread.
    await reader.cancel().catch(() => {});
  }
}
