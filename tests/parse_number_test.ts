import assert from "node:assert/strict";
import { parseNumber, plainDecimalAt } from "../src/sample.ts";

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

Deno.test("plainDecimalAt reads a plain decimal in place exactly as parseNumber reads it cut out, and leaves the rest to it", () => {
  const alphabet = ["0", "7", "9", ".", "+", "-", "e"];
  const plain = /^[+-]?\d+(\.\d*)?$/;
  let texts = [""];
  const check = (text: string) => {
    const line = `m{a="1"} ${text} 12`;
    const start = 'm{a="1"} '.length;
    const value = plainDecimalAt(line, start, start + text.length);
    const digits = text.replace(/[^0-9]/g, "").length;
    if (plain.test(text) && digits <= 15) {
      assert.ok(value !== undefined, `'${text}' is read in place`);
      assert.ok(Object.is(value, parseNumber(text)), `'${text}': ${value} against ${parseNumber(text)}`);
    } else assert.equal(value, undefined, `'${text}' is left to parseNumber`);
  };
  for (let length = 1; length <= 6; length++) {
    texts = texts.flatMap((t) => alphabet.map((c) => t + c));
    texts.forEach(check);
  }
  // Long ones: up to 15 digits read in place, each rounded as Number() rounds it; 16 left to parseNumber.
  let seed = 7;
  const digit = () => String((seed = (seed * 1103515245 + 12345) % 2 ** 31) % 10);
  for (let i = 0; i < 20_000; i++) {
    const n = 1 + (i % 16);
    const text = Array.from({ length: n }, digit).join("");
    const dot = i % (n + 1);
    check(`${i % 3 === 0 ? "-" : ""}${text.slice(0, dot)}${dot > 0 ? "." : ""}${text.slice(dot)}`);
  }
});
