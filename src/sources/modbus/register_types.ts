/**
 * Modbus register types, named the way Grid'5000's metric URLs name them
 * (`modbus://<host>/1/1032/le_le_f32`):
 *
 * - `<byte order>_<word order>_<kind>` for the kinds spanning several registers: `u32`, `i32`,
 *   `f32` (2 registers) and `u64`, `i64`, `f64` (4 registers);
 * - `<byte order>_<kind>` for the one-register kinds `u16` and `i16` (a word order means nothing
 *   for them, so `be_be_u16` is refused rather than silently accepted).
 *
 * Orders are `be` or `le`. Write the value's big-endian bytes as A B C D (A most significant;
 * A..H for 64-bit kinds). Each register travels on the wire as two bytes:
 *
 * - the **byte order** is the order of the two bytes inside every register: `be` puts the more
 *   significant byte first (the Modbus standard), `le` swaps them;
 * - the **word order** is the order of the registers: `be` puts the register holding the most
 *   significant bytes at the lowest address, `le` puts the least significant register there.
 *
 * | type        | registers, lowest address first | also called                  |
 * |-------------|---------------------------------|------------------------------|
 * | `be_be_f32` | AB CD                           | ABCD, big-endian             |
 * | `be_le_f32` | CD AB                           | CDAB, word-swapped           |
 * | `le_be_f32` | BA DC                           | BADC, byte-swapped           |
 * | `le_le_f32` | DC BA                           | DCBA, little-endian          |
 * | `be_le_u64` | GH EF CD AB                     | word-swapped 64-bit          |
 * | `le_u16`    | BA                              | byte-swapped 16-bit register |
 *
 * These are exactly pymodbus's `byteorder` and `wordorder` of `BinaryPayloadDecoder`
 * (`le_le_f32` = `byteorder=Endian.Little, wordorder=Endian.Little`), the library Grid'5000's
 * names most likely come from; the tests check every type against it. 64-bit integers decode to
 * bigint so that nothing is rounded before the sample is built.
 */

export type Order = "be" | "le";
export type Kind = "u16" | "i16" | "u32" | "i32" | "f32" | "u64" | "i64" | "f64";

export interface ModbusType {
  name: string;
  byteOrder: Order;
  wordOrder: Order;
  kind: Kind;
  /** Number of 16-bit registers the value spans. */
  registers: 1 | 2 | 4;
}

const REGISTERS: Record<Kind, 1 | 2 | 4> = {
  u16: 1,
  i16: 1,
  u32: 2,
  i32: 2,
  f32: 2,
  u64: 4,
  i64: 4,
  f64: 4,
};

export const MODBUS_KINDS = Object.keys(REGISTERS) as Kind[];

export function parseModbusType(name: string): ModbusType | { error: string } {
  const parts = name.split("_");
  const kind = parts[parts.length - 1] as Kind;
  if (!(kind in REGISTERS)) {
    return { error: `Unknown Modbus type '${name}': the kind must be one of ${MODBUS_KINDS.join(", ")}` };
  }
  const registers = REGISTERS[kind];
  const orders = parts.slice(0, -1);
  if (!orders.every((o) => o === "be" || o === "le")) {
    return { error: `Unknown Modbus type '${name}': byte and word orders are 'be' or 'le'` };
  }
  if (registers === 1) {
    if (orders.length !== 1) {
      return {
        error: `Invalid Modbus type '${name}': a 16-bit kind takes a byte order only (be_${kind} or le_${kind})`,
      };
    }
    return { name, byteOrder: orders[0] as Order, wordOrder: "be", kind, registers };
  }
  if (orders.length !== 2) {
    return {
      error: `Invalid Modbus type '${name}': a ${
        registers * 16
      }-bit kind takes a byte and a word order (e.g. be_be_${kind})`,
    };
  }
  return { name, byteOrder: orders[0] as Order, wordOrder: orders[1] as Order, kind, registers };
}

/**
 * Decodes `type.registers` register values (0..65535, lowest address first, as the device sent
 * them) into the value they hold.
 */
export function decodeRegisters(type: ModbusType, registers: ArrayLike<number>): number | bigint {
  const n = type.registers;
  if (registers.length !== n) {
    throw new RangeError(`Type ${type.name} needs ${n} registers, got ${registers.length}`);
  }
  // Rebuild the value's big-endian bytes: undo the word order, then the byte order.
  const view = new DataView(new ArrayBuffer(n * 2));
  for (let i = 0; i < n; i++) {
    const word = registers[type.wordOrder === "be" ? i : n - 1 - i]!;
    const swapped = type.byteOrder === "be" ? word : ((word & 0xff) << 8) | (word >> 8);
    view.setUint16(i * 2, swapped);
  }
  switch (type.kind) {
    case "u16":
      return view.getUint16(0);
    case "i16":
      return view.getInt16(0);
    case "u32":
      return view.getUint32(0);
    case "i32":
      return view.getInt32(0);
    case "f32":
      return view.getFloat32(0);
    case "u64":
      return view.getBigUint64(0);
    case "i64":
      return view.getBigInt64(0);
    case "f64":
      return view.getFloat64(0);
  }
}
