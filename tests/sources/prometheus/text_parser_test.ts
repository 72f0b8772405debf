import assert from "node:assert/strict";
import {
  type LineError,
  MAX_LINE_CHARS,
  PrometheusTextParser,
  type PromSample,
  SeriesTexts,
} from "../../../src/sources/prometheus/text_parser.ts";

/** Parses `pieces` as consecutive parts of one body. */
function parse(pieces: string[], wanted?: ReadonlySet<string>, known?: SeriesTexts) {
  const samples: PromSample[] = [];
  const errors: LineError[] = [];
  const sink = { sample: (s: PromSample) => samples.push(s), error: (e: LineError) => errors.push(e) };
  const parser = new PrometheusTextParser(wanted, known);
  for (const piece of pieces) parser.push(piece, sink);
  parser.end(sink);
  return { samples, errors };
}

Deno.test("PrometheusTextParser reads the full text exposition format", () => {
  const text = [
    "# HELP node_load1 1m load average.",
    "# TYPE node_load1 gauge",
    "node_load1 0.21",
    'node_cpu_seconds_total{cpu="0",mode="idle"} 123.5 1606389005123',
    'weird{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} +Inf',
    "neg -Inf",
    "nan NaN",
    "exp 1.5e-3",
    "",
    "# a comment",
  ].join("\n");
  const { samples, errors } = parse([text]);
  assert.deepEqual(errors, []);
  assert.equal(samples.length, 6);
  assert.deepEqual(samples[0], { name: "node_load1", series: "node_load1", labels: {}, value: 0.21, line: 3 });
  assert.equal(samples[1]!.timestampMs, 1606389005123);
  assert.deepEqual(samples[1]!.labels, { cpu: "0", mode: "idle" });
  assert.deepEqual(samples[2]!.labels, { path: "C:\\dir", quote: 'say "hi"', nl: "a\nb" });
  assert.equal(samples[2]!.value, Infinity);
  assert.equal(samples[3]!.value, -Infinity);
  assert.ok(Number.isNaN(samples[4]!.value));
  assert.equal(samples[5]!.value, 0.0015);
});

Deno.test("PrometheusTextParser keeps only wanted names and reports malformed lines alone", () => {
  const text = 'a 1\nb{x="1"} 2\nc{x="unterminated} 3\nb oops\nb 4\n';
  const { samples, errors } = parse([text], new Set(["b", "c"]));
  assert.deepEqual(samples.map((s) => s.value), [2, 4]);
  assert.deepEqual(errors.map((e) => e.line), [3, 4]);
});

Deno.test("PrometheusTextParser gives the same samples whatever the pieces the body arrives in", () => {
  const text = 'a{x="1"} 1\r\n# TYPE b gauge\nb 2 1606389005123\nc{y="é\\n"} 3\nd 4';
  const whole = parse([text]);
  assert.equal(whole.samples.length, 4);
  for (let size = 1; size < text.length; size++) {
    const pieces: string[] = [];
    for (let at = 0; at < text.length; at += size) pieces.push(text.slice(at, at + size));
    assert.deepEqual(parse(pieces), whole, `pieces of ${size} characters`);
  }
});

Deno.test("PrometheusTextParser skips a line longer than MAX_LINE_CHARS without holding it", () => {
  const long = `a{x="${"y".repeat(MAX_LINE_CHARS)}"} 1`;
  const pieces = ["b 1\n", ...long.match(/.{1,1000}/g)!, "\nc 3\n"];
  const { samples, errors } = parse(pieces);
  assert.deepEqual(samples.map((s) => [s.name, s.line]), [["b", 1], ["c", 3]]);
  assert.deepEqual(errors, [{ line: 2, message: `Line longer than ${MAX_LINE_CHARS} characters` }]);
});

Deno.test("PrometheusTextParser parses a known series' labels once and still reads each line's value and errors", () => {
  const known = new SeriesTexts(100);
  const scrape = (n: number) => [`a{x="1",y="}"} ${n}\n`, `a{x="1",y="}"} oops\n`, `b ${n} 1606389005123\n`];
  const first = parse(scrape(1), undefined, known);
  const second = parse(scrape(2), undefined, known);
  assert.equal(known.size, 2);
  assert.equal(second.samples[0]!.labels, first.samples[0]!.labels);
  assert.deepEqual(second.samples[0]!.labels, { x: "1", y: "}" });
  assert.deepEqual(second.samples.map((s) => [s.series, s.value, s.timestampMs]), [
    ['a{x="1",y="}"}', 2, undefined],
    ["b", 2, 1606389005123],
  ]);
  assert.deepEqual(second.errors, first.errors);
  assert.deepEqual(second.errors.map((e) => e.line), [2]);
});

Deno.test("SeriesTexts keeps at most its bound of series", () => {
  const known = new SeriesTexts(10);
  parse([Array.from({ length: 25 }, (_, i) => `m{i="${i}"} 1`).join("\n")], undefined, known);
  assert.ok(known.size <= 10);
});
