import assert from "node:assert/strict";
import { bytesToBigInt, octetsToText, SnmpType, varbindValue } from "../../../src/sources/snmp/value.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

Deno.test("snmp Counter64 buffers of any length become exact bigints", () => {
  assert.equal(bytesToBigInt(bytes(0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfa)), 18446744073709551610n);
  assert.equal(bytesToBigInt(bytes(0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01)), 9007199254740993n);
  assert.equal(bytesToBigInt(bytes(0)), 0n);
  assert.equal(varbindValue({ oid: "1.3", type: SnmpType.Counter64, value: bytes(1, 0) }), 256n);
});

Deno.test("snmp OctetStrings decode as UTF-8, then Latin-1, then hex bytes", () => {
  const utf8 = new TextEncoder().encode("Température 21.5 °C");
  assert.equal(octetsToText(utf8), "Température 21.5 °C");
  assert.equal(octetsToText(bytes(0x54, 0x65, 0x6d, 0x70, 0xe9)), "Tempé");
  assert.equal(octetsToText(bytes(0x31, 0x32, 0x2e, 0x35, 0, 0)), "12.5");
  assert.equal(octetsToText(bytes(0x00, 0x1a, 0x2b, 0x81)), "00:1a:2b:81");
  assert.equal(octetsToText(bytes(0x61, 0x00, 0x62)), "61:00:62");
  assert.equal(octetsToText(bytes(0x61, 0x85)), "61:85");
  assert.equal(octetsToText(bytes()), "");
});

Deno.test("snmp varbinds give numbers, text, Opaque floats, or an error naming the OID", () => {
  assert.equal(varbindValue({ oid: "1.3", type: SnmpType.Gauge, value: 4294967295 }), 4294967295);
  assert.equal(varbindValue({ oid: "1.3", type: SnmpType.Integer, value: -5 }), -5);
  assert.equal(varbindValue({ oid: "1.3", type: SnmpType.TimeTicks, value: 12 }), 12);
  assert.equal(varbindValue({ oid: "1.3", type: SnmpType.IpAddress, value: "10.0.0.1" }), "10.0.0.1");
  const float = new Uint8Array([0x9f, 0x78, 0x04, 0, 0, 0, 0]);
  new DataView(float.buffer).setFloat32(3, 21.5);
  assert.equal(varbindValue({ oid: "1.3", type: SnmpType.Opaque, value: float }), 21.5);
  assert.deepEqual(varbindValue({ oid: "1.3.6.1.9", type: SnmpType.NoSuchInstance, value: null }), {
    error: "noSuchInstance for 1.3.6.1.9",
  });
  assert.deepEqual(varbindValue({ oid: "1.3", type: SnmpType.EndOfMibView, value: null }), {
    error: "endOfMibView for 1.3",
  });
});
