import type { RawValue } from "../../sample.ts";

/**
 * Varbind values as net-snmp decodes them, turned into raw readings: integers stay numbers,
 * Counter64 (a big-endian Buffer) becomes an exact bigint, OctetStrings become text (numeric
 * text is parsed later by the scheduler, like Kwollect did), and the "no such object" markers
 * become errors for their entry alone.
 */

/** ASN.1/SMI type tags, as in net-snmp's `ObjectType`. */
export const SnmpType = {
  Boolean: 1,
  Integer: 2,
  BitString: 3,
  OctetString: 4,
  Null: 5,
  OID: 6,
  IpAddress: 64,
  Counter: 65,
  Gauge: 66,
  TimeTicks: 67,
  Opaque: 68,
  Counter64: 70,
  NoSuchObject: 128,
  NoSuchInstance: 129,
  EndOfMibView: 130,
} as const;

export interface Varbind {
  oid: string;
  type: number;
  value: unknown;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/** The raw reading of a varbind, or why it has none. */
export function varbindValue(vb: Varbind): RawValue | { error: string } {
  const v = vb.value;
  switch (vb.type) {
    case SnmpType.Integer:
    case SnmpType.Counter:
    case SnmpType.Gauge:
    case SnmpType.TimeTicks:
      return typeof v === "number" ? v : { error: `Malformed ${typeName(vb.type)} value for ${vb.oid}` };
    case SnmpType.Counter64:
      return v instanceof Uint8Array ? bytesToBigInt(v) : { error: `Malformed Counter64 value for ${vb.oid}` };
    case SnmpType.OctetString:
      return v instanceof Uint8Array ? octetsToText(v) : { error: `Malformed OctetString value for ${vb.oid}` };
    case SnmpType.Opaque:
      return v instanceof Uint8Array ? opaqueValue(v) : { error: `Malformed Opaque value for ${vb.oid}` };
    case SnmpType.Boolean:
      return Boolean(v);
    case SnmpType.OID:
    case SnmpType.IpAddress:
      return String(v);
    case SnmpType.BitString:
      return v instanceof Uint8Array ? hex(v) : String(v);
    default:
      return { error: `${typeName(vb.type)} for ${vb.oid}` };
  }
}

export function typeName(type: number): string {
  switch (type) {
    case SnmpType.NoSuchObject:
      return "noSuchObject";
    case SnmpType.NoSuchInstance:
      return "noSuchInstance";
    case SnmpType.EndOfMibView:
      return "endOfMibView";
    case SnmpType.Null:
      return "Null value";
  }
  const name = Object.entries(SnmpType).find(([, t]) => t === type)?.[0];
  return name ?? `Unknown type ${type}`;
}

/** An unsigned big-endian integer of any length (Counter64 comes as 1 to 9 bytes). */
export function bytesToBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/**
 * Text of an OctetString: UTF-8 when it is valid UTF-8 text, Latin-1 when every byte is a
 * printable Latin-1 character (older devices), hex bytes (`00:1a:2b`) otherwise. Trailing NUL
 * padding is dropped; a NUL inside makes the value binary, since PostgreSQL's jsonb (where text
 * values end up, in `value_str`) cannot hold U+0000.
 */
export function octetsToText(bytes: Uint8Array): string {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  const body = bytes.subarray(0, end);
  if (!body.some(isControl)) {
    try {
      return utf8.decode(body);
    } catch {
      if (!body.some((b) => b >= 0x80 && b < 0xa0)) return latin1.decode(body);
    }
  }
  return hex(bytes);
}

function isControl(b: number): boolean {
  return (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * Net-SNMP agents send floats wrapped in an Opaque (tag 0x9f78 for a float, 0x9f79 for a
 * double, per the draft-perkins-opaque encoding); other Opaque contents are returned as hex.
 */
function opaqueValue(bytes: Uint8Array): RawValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length === 7 && bytes[0] === 0x9f && bytes[1] === 0x78 && bytes[2] === 4) return view.getFloat32(3);
  if (bytes.length === 11 && bytes[0] === 0x9f && bytes[1] === 0x79 && bytes[2] === 8) return view.getFloat64(3);
  return hex(bytes);
}
