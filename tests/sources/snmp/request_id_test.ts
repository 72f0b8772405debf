import assert from "node:assert/strict";
import { requestIdOf } from "../../../src/sources/snmp/request_id.ts";

/** A BER TLV, with a long-form length from 128 bytes on. */
function tlv(tag: number, content: number[]): number[] {
  const n = content.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return [tag, ...len, ...content];
}

function int32(value: number): number[] {
  return tlv(0x02, [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);
}

const SYS_NAME = tlv(0x06, [0x2b, 6, 1, 2, 1, 1, 5, 0]);

/** A v1 (version 0) or v2c (version 1) GetRequest for sysName.0. */
function getRequest(version: number, community: string, id: number): Uint8Array {
  const varbinds = tlv(0x30, tlv(0x30, [...SYS_NAME, 0x05, 0x00]));
  const pdu = tlv(0xa0, [...int32(id), ...tlv(0x02, [0]), ...tlv(0x02, [0]), ...varbinds]);
  const text = [...new TextEncoder().encode(community)];
  return new Uint8Array(tlv(0x30, [...tlv(0x02, [version]), ...tlv(0x04, text), ...pdu]));
}

Deno.test("snmp request id is read from v1 and v2c messages", () => {
  assert.equal(requestIdOf(getRequest(0, "public", 0x12345678)), 0x12345678);
  assert.equal(requestIdOf(getRequest(1, "public", 99_999_999)), 99_999_999);
  // Long-form lengths: a community of 200 bytes makes the message longer than 255 bytes.
  assert.equal(requestIdOf(getRequest(1, "c".repeat(200), 4242)), 4242);
});

Deno.test("snmp request id reads a signed INTEGER as net-snmp does", () => {
  assert.equal(requestIdOf(getRequest(1, "public", -5 >>> 0)), -5);
  const fiveBytes = tlv(0x02, [0x00, 0xff, 0xff, 0xff, 0xfe]);
  const pdu = tlv(0xa2, [...fiveBytes, ...tlv(0x02, [0]), ...tlv(0x02, [0]), ...tlv(0x30, [])]);
  const msg = new Uint8Array(tlv(0x30, [...tlv(0x02, [1]), ...tlv(0x04, [0x61]), ...pdu]));
  assert.equal(requestIdOf(msg), 0xfffffffe);
});

Deno.test("snmp request id of a v3 message is its header's msgID", () => {
  const header = tlv(0x30, [...int32(777_000), ...tlv(0x02, [0x00, 0xff, 0xe3]), ...tlv(0x04, [4]), ...tlv(0x02, [3])]);
  const msg = new Uint8Array(tlv(0x30, [...tlv(0x02, [3]), ...header, ...tlv(0x04, []), ...tlv(0x30, [])]));
  assert.equal(requestIdOf(msg), 777_000);
});

Deno.test("snmp request id is undefined for what is not an SNMP message", () => {
  const whole = getRequest(1, "public", 1234);
  // The id ends at byte 21 (30 29, version, "public", a0 1c, 02 04 and four bytes).
  for (let cut = 0; cut < 21; cut++) assert.equal(requestIdOf(whole.subarray(0, cut)), undefined, `cut at ${cut}`);
  assert.equal(requestIdOf(new Uint8Array()), undefined);
  assert.equal(requestIdOf(new TextEncoder().encode("GET / HTTP/1.1\r\n")), undefined);
  const notAPdu = whole.slice();
  notAPdu[13] = 0x30;
  assert.equal(requestIdOf(notAPdu), undefined);
});
