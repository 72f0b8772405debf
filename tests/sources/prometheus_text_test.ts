import assert from "node:assert/strict";
import { parsePrometheusText } from "../../src/sources/prometheus_text.ts";

Deno.test("parsePrometheusText() reads the full text exposition format", () => {
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
  const { samples, errors } = parsePrometheusText(text);
  assert.deepEqual(errors, []);
  assert.equal(samples.length, 6);
  assert.deepEqual(samples[0], { name: "node_load1", labels: {}, value: 0.21, line: 3 });
  assert.equal(samples[1]!.timestampMs, 1606389005123);
  assert.deepEqual(samples[1]!.labels, { cpu: "0", mode: "idle" });
  assert.deepEqual(samples[2]!.labels, { path: "C:\\dir", quote: 'say "hi"', nl: "a\nb" });
  assert.equal(samples[2]!.value, Infinity);
  assert.equal(samples[3]!.value, -Infinity);
  assert.ok(Number.isNaN(samples[4]!.value));
  assert.equal(samples[5]!.value, 0.0015);
});

Deno.test("parsePrometheusText() keeps only wanted names and reports malformed lines alone", () => {
  const text = 'a 1\nb{x="1"} 2\nc{x="unterminated} 3\nb oops\nb 4\n';
  const { samples, errors } = parsePrometheusText(text, new Set(["b", "c"]));
  assert.deepEqual(samples.map((s) => s.value), [2, 4]);
  assert.deepEqual(errors.map((e) => e.line), [3, 4]);
});
