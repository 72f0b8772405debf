import type http from "node:http";
import { Buffer } from "node:buffer";
import type { Readable } from "node:stream";
import zlib from "node:zlib";

/**
 * Reads the JSON body of an HTTP response (Redfish documents) within bounds, whatever the
 * device sends:
 * - a body whose Content-Length already says it is larger than `maxBytes` (uncompressed) is
 *   refused before a byte of it is read;
 * - the body is read as a stream, chunked or not, and decompressed as it comes (gzip, deflate);
 *   at most `maxBytes` bytes after decompression are held: past them the request is destroyed
 *   and the document fails, so a gzip bomb stops at the limit of decompressed bytes;
 * - the nesting depth is checked on the bytes as they come: a document nested deeper than
 *   MAX_JSON_DEPTH fails before it is parsed (a million levels of `[` would otherwise become a
 *   million arrays in the heap);
 * - only then is the text parsed, with JSON.parse.
 * Every failure names the URL and the bound; it fails that document only.
 */

/** Deepest nesting of a JSON document accepted; Redfish documents nest about 10 levels. */
export const MAX_JSON_DEPTH = 100;

export interface JsonBodyOptions {
  /** The URL, without credentials, for messages. */
  url: string;
  maxBytes: number;
  /** Called once when the body is refused, after `done`, to stop the transfer (destroy the request). */
  stop(): void;
  /**
   * Called exactly once, synchronously when the body is refused: before `stop()` makes the
   * request report its own "aborted" error, so the caller hears the reason first.
   */
  done(err: Error | undefined, doc?: unknown): void;
}

export function readJsonBody(res: http.IncomingMessage, opts: JsonBodyOptions): void {
  let settled = false;
  const encoding = String(res.headers["content-encoding"] ?? "identity").trim().toLowerCase();
  let decoded: Readable = res;
  const fail = (message: string) => {
    if (settled) return;
    settled = true;
    opts.done(new Error(message));
    opts.stop();
    decoded.destroy();
  };
  res.on("error", (err: Error) => fail(`GET ${opts.url} failed: ${err.message}`));
  if (encoding === "gzip" || encoding === "x-gzip") decoded = res.pipe(zlib.createGunzip());
  else if (encoding === "deflate") decoded = res.pipe(zlib.createInflate());
  else if (encoding !== "identity" && encoding !== "") {
    return fail(`GET ${opts.url} sent content-encoding '${encoding}', which is not supported (gzip, deflate)`);
  }
  const compressed = decoded !== res;
  const declared = Number(res.headers["content-length"] ?? 0);
  if (!compressed && declared > opts.maxBytes) {
    return fail(
      `GET ${opts.url} announced ${declared} bytes, more than ${opts.maxBytes} (redfish_max_body_bytes): document refused`,
    );
  }
  const depth = new JsonDepthGuard();
  const chunks: Uint8Array[] = [];
  let size = 0;
  decoded.on("data", (chunk: Uint8Array) => {
    if (settled) return;
    size += chunk.length;
    if (size > opts.maxBytes) {
      const after = compressed ? " after decompression" : "";
      return fail(
        `GET ${opts.url} sent more than ${opts.maxBytes} bytes${after} (redfish_max_body_bytes): document refused`,
      );
    }
    if (!depth.feed(chunk)) {
      return fail(`GET ${opts.url} sent JSON nested deeper than ${MAX_JSON_DEPTH} levels: document refused`);
    }
    chunks.push(chunk);
  });
  if (compressed) {
    decoded.on("error", (err: Error) => fail(`GET ${opts.url} sent a corrupt ${encoding} body: ${err.message}`));
  }
  decoded.on("end", () => {
    if (settled) return;
    settled = true;
    const text = Buffer.concat(chunks).toString("utf8");
    chunks.length = 0;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      const type = res.headers["content-type"] ?? "none";
      return opts.done(
        new Error(`GET ${opts.url} did not answer JSON (content-type '${type}'): ${(err as Error).message}`),
      );
    }
    opts.done(undefined, doc);
  });
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;

/**
 * Follows the nesting depth of JSON text fed in pieces, outside strings. UTF-8 never uses the
 * bytes of `"`, `\`, brackets or braces inside a multi-byte character, so bytes can be scanned
 * as they come.
 */
export class JsonDepthGuard {
  #depth = 0;
  #inString = false;
  #escaped = false;

  /** Takes the next bytes; false once the depth went beyond MAX_JSON_DEPTH. */
  feed(bytes: Uint8Array): boolean {
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (b === BACKSLASH) this.#escaped = true;
        else if (b === QUOTE) this.#inString = false;
      } else if (b === QUOTE) this.#inString = true;
      else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
        if (++this.#depth > MAX_JSON_DEPTH) return false;
      } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) this.#depth--;
    }
    return true;
  }
}
