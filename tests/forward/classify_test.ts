import assert from "node:assert/strict";
import { classify } from "../../src/forward/classify.ts";
import { ConfigError } from "../../src/config/errors.ts";
import { SpoolError } from "../../src/spool/errors.ts";

function pgError(code: string): Error {
  return Object.assign(new Error(`server says ${code}`), { name: "PostgresError", code });
}

function coded(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

Deno.test("classify() retries what the network or a busy server caused", () => {
  for (const code of ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "CONNECTION_CLOSED", "CONNECT_TIMEOUT"]) {
    assert.equal(classify(coded(code)), "retry", code);
  }
  for (const sqlstate of ["08006", "40001", "53300", "55P03", "57014", "57P01", "58030", "XX000"]) {
    assert.equal(classify(pgError(sqlstate)), "retry", sqlstate);
  }
  assert.equal(classify(Object.assign(new Error("aborted"), { name: "AbortError" })), "retry");
});

Deno.test("classify() sends rows the server refuses for their content to bisection", () => {
  for (const sqlstate of ["22P02", "22021", "23514", "23502", "54000"]) {
    assert.equal(classify(pgError(sqlstate)), "data", sqlstate);
  }
});

Deno.test("classify() asks a person to act on authentication, privileges, missing objects and TLS settings", () => {
  for (const sqlstate of ["28P01", "3D000", "42501", "42P01", "0A000"]) {
    assert.equal(classify(pgError(sqlstate)), "config", sqlstate);
  }
  assert.equal(classify(coded("SASL_SIGNATURE_MISMATCH")), "config");
  assert.equal(classify(coded("UNABLE_TO_VERIFY_LEAF_SIGNATURE")), "config");
  assert.equal(classify(coded("ERR_TLS_CERT_ALTNAME_INVALID")), "config");
  assert.equal(classify(new ConfigError([{ file: "configuration", key: "db_sslrootcert", message: "x" }])), "config");
});

Deno.test("classify() tells the spool's own troubles apart from the central database's", () => {
  assert.equal(classify(coded("ERR_SQLITE_ERROR", "database or disk is full")), "local");
  assert.equal(classify(new SpoolError("Cannot open spool 'x': disk I/O error", "refused")), "local");
});

Deno.test("classify() calls a programming error a bug, never a reason to retry", () => {
  assert.equal(classify(new RangeError("Invalid time value")), "bug");
  assert.equal(classify(new TypeError("Cannot read properties of undefined (reading 'seq')")), "bug");
  assert.equal(classify(new ReferenceError("x is not defined")), "bug");
  assert.equal(classify(coded("UNDEFINED_VALUE")), "bug", "a query parameter left undefined");
  assert.equal(classify(coded("NOT_TAGGED_CALL")), "bug");
  assert.equal(classify(new Error("something with no code at all")), "bug");
  assert.equal(classify("a thrown string"), "bug");
});
