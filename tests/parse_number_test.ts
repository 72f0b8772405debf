import assert from "node:assert/strict";
import { parseNumber } from "../src/sample.ts";

/** The grammar parseNumber documents, as a regular expression: the reference it is checked against. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

Deno.test("parseNumber reads decimals and Prometheus' special values", () => {
  const cases: [string, number][] = [
    ["0", 0],
    ["42", 42],
    ["-3.5", -3.5],
    ["+7", 7],
    ["5.", 5],
    [".25", 0.25],
    ["1e3", 1000],
    ["1.5E-2", 0.015],
    ["-2e+2", -200],
    ["+Inf", Infinity],
    ["Inf", Infinity],
    ["-Inf", -Infinity],
    ["-inf", -Infinity],
  ];
  for (const [text, value] of cases) assert.equal(parseNumber(text), value, text);
  assert.ok(Number.isNaN(parseNumber("NaN")));
});

Deno.test("parseNumber refuses what Number() would take but Kwollect does not", () => {
  for (
    const text of [
      "",
      " 1",
      "1 ",
      "0x10",
      "0b1",
      "0o7",
      "Infinity",
      "-Infinity",
      "1e",
      "1e+",
      ".",
      "+",
      "-.",
      "1..2",
      "1_000",
      "e5",
      "1e5.0",
      "--1",
      "١",
    ]
  ) {
    assert.ok(Number.isNaN(parseNumber(text)), `'${text}' should not be a number`);
  }
});

Deno.test("parseNumber agrees with its documented grammar on every short string of number characters", () => {
  const alphabet = ["0", "7", ".", "e", "E", "+", "-", "x"];
  let texts = [""];
  for (let length = 1; length <= 5; length++) {
    texts = texts.flatMap((t) => alphabet.map((c) => t + c));
    for (const text of texts) {
      const expected = DECIMAL.test(text) ? Number(text) : NaN;
      assert.ok(Object.is(parseNumber(text), expected), `'${text}': ${parseNumber(text)} instead of ${expected}`);
    }
  }
});
