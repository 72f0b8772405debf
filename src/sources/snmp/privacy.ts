import { Buffer } from "node:buffer";
import crypto from "node:crypto";
import snmp from "net-snmp";

/**
 * SNMPv3 privacy (encryption) that works under Deno. net-snmp encrypts with
 * `crypto.createCipheriv("aes-128-cfb" | "aes-256-cfb" | "des-cbc")`, and Deno's node:crypto
 * has none of these three ("Unknown cipher"), so authPriv sessions failed on their first
 * request. This module gives net-snmp's cipher table equivalent functions built on ciphers Deno
 * does have, keeping net-snmp's own key localisation and IV rules:
 *
 * - AES-CFB128 (RFC 3826): each keystream block is the AES-ECB encryption of the previous
 *   ciphertext block (the IV for the first one), XORed with the data.
 * - DES-CBC (RFC 3414 §8): triple DES with the same key three times is single DES
 *   (E_k(D_k(E_k(x))) = E_k(x)), so des-ede3-cbc with k‖k‖k computes DES-CBC.
 *
 * A runtime that has the original ciphers keeps net-snmp's functions.
 */

// deno-lint-ignore no-explicit-any
type Engine = any;
interface Algorithm {
  KEY_LENGTH: number;
  BLOCK_LENGTH: number;
  localizationAlgorithm(alg: Algorithm, authProtocol: number, password: string, engineID: Buffer): Buffer;
  encryptPdu: unknown;
  decryptPdu: unknown;
}

const Encryption = snmp.Encryption as {
  algorithms: Record<number, Algorithm>;
  generateIvAes(alg: Algorithm, boots: number, time: number, salt: Buffer): Buffer;
};
const Authentication = snmp.Authentication as {
  passwordToKey(authProtocol: number, password: string, engineID: Buffer): Buffer;
};

let installed = false;

/** Replaces net-snmp's ciphers the runtime lacks; safe to call more than once. */
export function installPrivacyCiphers(): void {
  if (installed) return;
  installed = true;
  const P = snmp.PrivProtocols as Record<string, number>;
  const aesVariants = [["aes", "aes-128-cfb"], ["aes256b", "aes-256-cfb"], ["aes256r", "aes-256-cfb"]] as const;
  for (const [name, native] of aesVariants) {
    const alg = Encryption.algorithms[P[name]!];
    if (!alg || hasCipher(native, alg.KEY_LENGTH, 16)) continue;
    alg.encryptPdu = encryptAes;
    alg.decryptPdu = decryptAes;
  }
  const des = Encryption.algorithms[P.des!];
  if (des && !hasCipher("des-cbc", 8, 8)) {
    des.encryptPdu = encryptDes;
    des.decryptPdu = decryptDes;
  }
}

function hasCipher(name: string, keyLength: number, ivLength: number): boolean {
  try {
    crypto.createCipheriv(name, Buffer.alloc(keyLength), Buffer.alloc(ivLength));
    return true;
  } catch {
    return false;
  }
}

function encryptAes(
  scopedPdu: Buffer,
  privProtocol: number,
  privPassword: string,
  authProtocol: number,
  engine: Engine,
) {
  const alg = Encryption.algorithms[privProtocol]!;
  const key = alg.localizationAlgorithm(alg, authProtocol, privPassword, engine.engineID);
  const salt = crypto.randomBytes(8);
  const iv = Encryption.generateIvAes(alg, engine.engineBoots, engine.engineTime, salt);
  return { encryptedPdu: aesCfbEncrypt(key, iv, scopedPdu), msgPrivacyParameters: salt };
}

function decryptAes(
  encryptedPdu: Buffer,
  privProtocol: number,
  privParameters: Buffer,
  privPassword: string,
  authProtocol: number,
  engine: Engine,
) {
  const alg = Encryption.algorithms[privProtocol]!;
  const key = alg.localizationAlgorithm(alg, authProtocol, privPassword, engine.engineID);
  const iv = Encryption.generateIvAes(alg, engine.engineBoots, engine.engineTime, privParameters);
  return aesCfbDecrypt(key, iv, encryptedPdu);
}

/** AES in CFB mode with 128-bit feedback, for a 16- or 32-byte key. */
export function aesCfbEncrypt(key: Buffer, iv: Buffer, data: Uint8Array): Buffer {
  const ecb = ecbCipher(key);
  const out = Buffer.alloc(data.length);
  let feedback: Uint8Array = iv;
  for (let at = 0; at < data.length; at += 16) {
    const keystream = ecb.update(feedback);
    const n = Math.min(16, data.length - at);
    for (let i = 0; i < n; i++) out[at + i] = data[at + i]! ^ keystream[i]!;
    feedback = out.subarray(at, at + 16);
  }
  return out;
}

export function aesCfbDecrypt(key: Buffer, iv: Buffer, data: Uint8Array): Buffer {
  // The keystream inputs are all known up front: the IV, then every ciphertext block but the last.
  const whole = Math.ceil(data.length / 16) * 16;
  const inputs = Buffer.alloc(whole);
  Buffer.from(iv).copy(inputs, 0, 0, 16);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(inputs, 16, 0, whole - 16);
  const keystream = ecbCipher(key).update(inputs);
  const out = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i]! ^ keystream[i]!;
  return out;
}

function ecbCipher(key: Buffer): crypto.Cipheriv {
  const cipher = crypto.createCipheriv(key.length === 32 ? "aes-256-ecb" : "aes-128-ecb", key, null);
  cipher.setAutoPadding(false);
  return cipher;
}

/** RFC 3414 §8.1.1.1: DES key = first 8 bytes of the localised key, pre-IV = the next 8. */
function desKeyAndPreIv(authProtocol: number, privPassword: string, engineID: Buffer): [Buffer, Buffer] {
  const localized = Authentication.passwordToKey(authProtocol, privPassword, engineID);
  return [localized.subarray(0, 8), localized.subarray(8, 16)];
}

function encryptDes(
  scopedPdu: Buffer,
  _privProtocol: number,
  privPassword: string,
  authProtocol: number,
  engine: Engine,
) {
  const [key, preIv] = desKeyAndPreIv(authProtocol, privPassword, engine.engineID);
  const salt = crypto.randomBytes(8);
  const padded = Buffer.alloc(Math.ceil(scopedPdu.length / 8) * 8);
  scopedPdu.copy(padded);
  return { encryptedPdu: desCbc(true, key, xor(preIv, salt), padded), msgPrivacyParameters: salt };
}

function decryptDes(
  encryptedPdu: Buffer,
  _privProtocol: number,
  privParameters: Buffer,
  privPassword: string,
  authProtocol: number,
  engine: Engine,
) {
  const [key, preIv] = desKeyAndPreIv(authProtocol, privPassword, engine.engineID);
  return desCbc(false, key, xor(preIv, privParameters), encryptedPdu);
}

/** Single DES in CBC mode (no padding), through triple DES with the key repeated. */
export function desCbc(encrypt: boolean, key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const tripled = Buffer.concat([key, key, key]);
  const c = encrypt
    ? crypto.createCipheriv("des-ede3-cbc", tripled, iv)
    : crypto.createDecipheriv("des-ede3-cbc", tripled, iv);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

function xor(a: Buffer, b: Buffer): Buffer {
  return Buffer.from(a.map((x, i) => x ^ (b[i] ?? 0)));
}
