import assert from "node:assert";
import { createRequire } from "node:module";
import { installFastAssertOk } from "../../../src/sources/snmp/ber_assert.ts";

/** What a call of `ok` threw (its class, message and fields), or "returned". */
function outcome(ok: (...args: unknown[]) => void, args: unknown[]): unknown {
  try {
    ok(...args);
    return "returned";
  } catch (err) {
    const e = err as assert.AssertionError;
    // A message node:assert generates quotes the failing call's source: the wrapper's, for the cheap ok.
    const generated = e.message.startsWith("The expression evaluated to a falsy value:");
    const message = generated ? "(generated from the call's source)" : e.message;
    return { name: e.name, message, code: e.code, actual: e.actual, expected: e.expected };
  }
}

Deno.test("the cheap assert.ok behaves as node:assert's own for every kind of value and message", () => {
  // assert/strict's `ok` is node:assert's original function, which the install leaves alone.
  const own = assert.strict.ok as (...args: unknown[]) => void;
  installFastAssertOk();
  const cheap = assert.ok as (...args: unknown[]) => void;
  assert.notEqual(cheap, own, "installed");
  const calls: unknown[][] = [
    [],
    [1],
    [true],
    ["x"],
    [{}],
    [0],
    [false],
    [""],
    [null],
    [undefined],
    [NaN],
    [0, "len must be set"],
    [false, new RangeError("own error")],
    [undefined, undefined],
  ];
  for (const args of calls) {
    assert.deepStrictEqual(outcome(cheap, args), outcome(own, args), `ok(${args.map(String).join(", ")})`);
  }
});

Deno.test("the cheap assert.ok is the one npm packages get from require('assert'), as net-snmp's BER writer does", () => {
  installFastAssertOk();
  installFastAssertOk();
  const required = createRequire(import.meta.url)("assert") as typeof assert;
  assert.equal(required.ok, assert.ok);
  assert.notEqual(required.ok, assert.strict.ok);
});
