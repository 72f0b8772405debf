import assert from "node:assert";

/**
 * # A cheap `assert.ok` for net-snmp's BER writer under Deno
 *
 * net-snmp encodes every request with asn1-ber, whose `Writer` calls `assert.ok(len)` (through
 * `require("assert")`, node:assert's default export) for each byte it writes. Deno's node:assert
 * `ok` (Deno 2.9.6) takes about 77 ns a call against 1.4 ns for a plain check (a loop of 5M
 * calls), and a CPU profile of scripts/bench/snmp.ts (`deno run --cpu-prof`) put 26–30 % of the
 * collector's CPU per SNMP sample in it: a GET of 50 OIDs writes some 1,000 bytes, one by one.
 *
 * `installFastAssertOk` replaces node:assert's `ok` with a function that returns at once for a
 * truthy value and hands every other call to the original, so each failure is the original's
 * AssertionError (the same code, actual and expected, and the message when one is given;
 * `assert.ok()` without a value included). Only a message node:assert generates from the source of
 * the failing call quotes this module's call instead of the caller's. `assert/strict`'s `ok` is a
 * property of its own and is left alone. Safe to call more than once.
 */

type Ok = (value?: unknown, message?: string | Error) => void;

const original: Ok = assert.ok;

function ok(this: unknown, value?: unknown): void {
  if (value) return;
  Reflect.apply(original, this, arguments);
}

/** Makes node:assert's `ok` the cheap one (see above). */
export function installFastAssertOk(): void {
  assert.ok = ok;
}
