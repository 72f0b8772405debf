/**
 * The request id of an SNMP message read from its first bytes, without decoding the rest: the
 * PDU's request-id for v1 and v2c, the msgID of the header for v3 (the id net-snmp matches an
 * answer to its request by). `undefined` for anything that is not such a message.
 */

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const OCTET_STRING = 0x04;
const V3 = 3;

export function requestIdOf(message: Uint8Array): number | undefined {
  const at = { pos: 0 };
  if (!enter(message, at, SEQUENCE)) return undefined;
  const version = integer(message, at);
  if (version === V3) {
    if (!enter(message, at, SEQUENCE)) return undefined;
    return integer(message, at);
  }
  if (version === undefined || !skip(message, at, OCTET_STRING)) return undefined;
  // The PDU: a context-specific constructed tag (GetRequest 0xa0 ... Report 0xa8).
  const tag = message[at.pos];
  if (tag === undefined || tag < 0xa0 || tag > 0xa8) return undefined;
  at.pos++;
  if (length(message, at) === undefined) return undefined;
  return integer(message, at);
}

/** Reads a definite length; `undefined` past the end or for a length of more than 4 bytes. */
function length(message: Uint8Array, at: { pos: number }): number | undefined {
  const first = message[at.pos++];
  if (first === undefined) return undefined;
  if (first < 0x80) return first;
  const bytes = first & 0x7f;
  if (bytes === 0 || bytes > 4 || at.pos + bytes > message.length) return undefined;
  let n = 0;
  for (let i = 0; i < bytes; i++) n = n * 256 + message[at.pos++]!;
  return n;
}

function enter(message: Uint8Array, at: { pos: number }, tag: number): boolean {
  if (message[at.pos] !== tag) return false;
  at.pos++;
  return length(message, at) !== undefined;
}

function skip(message: Uint8Array, at: { pos: number }, tag: number): boolean {
  if (message[at.pos] !== tag) return false;
  at.pos++;
  const n = length(message, at);
  if (n === undefined || at.pos + n > message.length) return false;
  at.pos += n;
  return true;
}

/** A signed INTEGER of 1 to 5 bytes (a 32-bit id may need a leading zero byte). */
function integer(message: Uint8Array, at: { pos: number }): number | undefined {
  if (message[at.pos] !== INTEGER) return undefined;
  at.pos++;
  const n = length(message, at);
  if (n === undefined || n < 1 || n > 5 || at.pos + n > message.length) return undefined;
  let value = message[at.pos]! >= 0x80 ? -1 : 0;
  for (let i = 0; i < n; i++) value = value * 256 + message[at.pos++]!;
  return value;
}
