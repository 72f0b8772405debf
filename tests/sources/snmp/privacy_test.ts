import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { aesCfbDecrypt, aesCfbEncrypt, desCbc } from "../../../src/sources/snmp/privacy.ts";

const hex = (s: string) => Buffer.from(s, "hex");
const IV = hex("000102030405060708090a0b0c0d0e0f");
// NIST SP 800-38A, F.3.13 and F.3.15 (CFB128-AES128 and CFB128-AES256), checked with openssl enc.
const PLAIN = hex(
  "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51" +
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
);
const AES128_KEY = hex("2b7e151628aed2a6abf7158809cf4f3c");
const AES128_CIPHER = hex(
  "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b" +
    "26751f67a3cbb140b1808cf187a4f4dfc04b05357c5d1c0eeac4c66f9ff7f2e6",
);
const AES256_KEY = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");

Deno.test("snmp AES-CFB128 matches the NIST vectors in both directions", () => {
  assert.equal(aesCfbEncrypt(AES128_KEY, IV, PLAIN).toString("hex"), AES128_CIPHER.toString("hex"));
  assert.equal(aesCfbDecrypt(AES128_KEY, IV, AES128_CIPHER).toString("hex"), PLAIN.toString("hex"));
});

Deno.test("snmp AES-CFB128 handles a last partial block and 256-bit keys", () => {
  const part = PLAIN.subarray(0, 37);
  const expected = "dc7e84bfda79164b7ecd8486985d386039ffed143b28b1c832113c6331e5407bdf10132415";
  assert.equal(aesCfbEncrypt(AES256_KEY, IV, part).toString("hex"), expected);
  assert.equal(aesCfbDecrypt(AES256_KEY, IV, hex(expected)).toString("hex"), part.toString("hex"));
});

Deno.test("snmp DES-CBC through triple DES with a repeated key is single DES", () => {
  // The classic DES example (key 133457799BBCDFF1), a second block checked with openssl enc -des-cbc.
  const key = hex("133457799bbcdff1");
  const plain = hex("0123456789abcdef0011223344556677");
  const cipher = desCbc(true, key, Buffer.alloc(8), plain);
  assert.equal(cipher.toString("hex"), "85e813540f0ab405ff9fd3ea7b3ac850");
  assert.equal(desCbc(false, key, Buffer.alloc(8), cipher).toString("hex"), plain.toString("hex"));
});
