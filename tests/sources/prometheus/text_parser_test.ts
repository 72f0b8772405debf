import assert from "node:assert/strict";
import {
  type LineError,
  MAX_LINE_CHARS,
  PrometheusTextParser,
  SeriesTexts,
} from "../../../src/sources/prometheus/text_parser.ts";
import { collecting, type Parsed } from "./parsed.ts";

/** Parses `pieces` as consecutive parts of one body. */
function parse(pieces: string[], wanted?: ReadonlySet<string>, known?: SeriesTexts) {
  const samples: Parsed[] = [];
  const errors: LineError[] = [];
  const sink = { sample: collecting(samples), error: (e: LineError) => errors.push(e) };
  const parser = new PrometheusTextParser(wanted, known);
  for (const piece of pieces) parser.push(piece, sink);
  parser.end(sink);
  // As the source does: the scrape tells the set how many series it had.
  known?.scraped(samples.length);
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
  assert.deepEqual(samples[0], {
    name: "node_load1",
    series: "node_load1",
    labels: {},
    value: 0.21,
    line: 3,
    cached: false,
  });
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
  // The first scrape tells how many series the exporter has; they are kept from the next one.
  assert.ok(parse(scrape(0), undefined, known).samples.every((s) => !s.cached));
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
  const body = Array.from({ length: 15 }, (_, i) => `m{i="${i}"} 1`).join("\n");
  parse([body], undefined, known);
  parse([body], undefined, known);
  assert.equal(known.size, 10);
});

Deno.test("SeriesTexts keeps series from the second scrape on, and none of an exporter with more than twice its bound", () => {
  const known = new SeriesTexts(10);
  const body = (n: number) => Array.from({ length: n }, (_, i) => `m{i="${i}"} 1`).join("\n");
  const scrape = (n: number) => {
    known.nextRound();
    return parse([body(n)], undefined, known).samples.filter((s) => s.cached).length;
  };
  // The first scrape only tells how many series there are.
  assert.equal(scrape(20), 0);
  assert.equal(known.keeps, true);
  // Twice the bound: the cache still pays, half of the series are found in it.
  assert.equal(scrape(20), 10);
  assert.equal(scrape(20), 10);
  // More: what it held goes, and the next scrapes keep nothing.
  assert.equal(scrape(21), 10);
  assert.equal(known.keeps, false);
  assert.equal(known.size, 0);
  assert.equal(scrape(25), 0);
  assert.equal(known.size, 0);
  // Fewer again: kept from the next scrape on.
  assert.equal(scrape(12), 0);
  assert.equal(known.keeps, true);
  assert.equal(scrape(12), 10);
});

Deno.test("PrometheusTextParser reads each scrape as a parser that knows no series would, whatever changed since the last", () => {
  const scrapes: [string[], ReadonlySet<string> | undefined][] = [
    [['a{x="1"} 1', 'a{x="2"} 2', "b 3", "c_total 4"], undefined],
    // The same order: every line is the one its links expect.
    [['a{x="1"} 5', 'a{x="2"} 6', "b 7", "c_total 8"], undefined],
    // A line that starts with the expected text but names another series, or adds to it.
    [['a{x="1"}x 1', 'a{x="1"} 2 # {trace="t"} 1', "b_other 3", "b\t4", "c_total{} 5", "c_total"], undefined],
    // Reordered, one series gone, one new, comments in between.
    [["c_total 1", "# HELP b b", 'a{x="2"} 2', 'a{x="3"} 3', "b 4 1606389005123"], undefined],
    // The entries active select fewer names: a series the links expect is not taken when not wanted.
    [["c_total 1", 'a{x="2"} 2', 'a{x="3"} 3', "b 4"], new Set(["b"])],
    [['a{x="2"} 1', 'a{x="3"} 2', "b 3", "c_total 4"], undefined],
    // More series than the cache holds: the links skip what it swept out.
    [Array.from({ length: 12 }, (_, i) => `m{i="${i}"} ${i}`), undefined],
    [Array.from({ length: 12 }, (_, i) => `m{i="${i}"} ${i}`), undefined],
    [Array.from({ length: 12 }, (_, i) => `m{i="${11 - i}"} ${i}`), undefined],
    [['a{x="1"} 1', 'a{x="2"} 2', "b 3", "c_total 4"], undefined],
    [['a{x="1"} 1', 'a{x="2"} 2', "b 3", "c_total 4"], undefined],
  ];
  const known = new SeriesTexts(8);
  // What a sample is, not whether its series is kept.
  const read = ({ samples, errors }: ReturnType<typeof parse>) => ({
    samples: samples.map(({ cached: _, ...sample }) => sample),
    errors,
  });
  for (const [i, [lines, wanted]] of scrapes.entries()) {
    known.nextRound();
    const text = lines.join("\n") + "\n";
    assert.deepEqual(read(parse([text], wanted, known)), read(parse([text], wanted)), `scrape ${i}`);
    assert.ok(known.size <= 8);
  }
});

Deno.test("PrometheusTextParser takes a line its links predict for the series of the same text", () => {
  const known = new SeriesTexts(100);
  const text = 'a{x="1"} 1\nb 2\n';
  parse([text], undefined, known);
  const first = parse([text], undefined, known);
  assert.equal(known.first?.text, 'a{x="1"}');
  assert.equal(known.first?.next?.text, "b");
  assert.equal(known.first?.next?.next, undefined);
  const second = parse([text], undefined, known);
  assert.deepEqual(second, first);
  assert.equal(second.samples[1]!.labels, first.samples[1]!.labels);
});
