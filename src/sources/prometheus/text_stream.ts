/**
 * Reading a text body a device may make hostile (a Prometheus exporter's answer):
 * - as a stream, never held whole: each chunk is decoded (UTF-8, characters split across
 *   chunks included) and handed on in pieces of at most PIECE_BYTES bytes;
 * - at most `maxBytes` bytes of it: one more and the read stops, the stream is cancelled (the
 *   connection let go, the rest never produced) and `tooLarge()` is thrown;
 * - in slices: after each piece, once SLICE_MS of work has gone by since the last turn of the
 *   event loop, it gets a turn (a zero-delay timer), so other timers fire on time while a large
 *   body is processed, even when the whole body is already buffered and every read resolves at
 *   once. The work of `onText` (parsing, building readings) counts in the slice.
 */

/** Longest the reading of one body holds the event loop before yielding to it, in ms. */
export const SLICE_MS = 10;
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
  let sliceStart = performance.now();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
      if (bytes > opts.maxBytes) throw opts.tooLarge();
      for (let at = 0; at < value.length; at += PIECE_BYTES) {
        opts.onText(decoder.decode(value.subarray(at, at + PIECE_BYTES), { stream: true }));
        if (performance.now() - sliceStart >= SLICE_MS) {
          await yieldToEventLoop();
          opts.signal.throwIfAborted();
          sliceStart = performance.now();
        }
      }
    }
    opts.onText(decoder.decode());
  } finally {
    // Stopped early (a limit, an abort, an error of onText): let the body go unread.
    await reader.cancel().catch(() => {});
  }
}

/** Hands the event loop to due timers and I/O, then comes back. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
