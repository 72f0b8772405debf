/**
 * What a hostile exporter can make the Prometheus source hold is bounded: each overrun fails the
 * poll with an error naming the exporter's URL and the configuration key that sets the bound.
 * Every exporter here is a real HTTP server on 127.0.0.1 sending the text exposition format.
 */
import assert from "node:assert/strict";
import { PART_READINGS, prometheus } from "../../../src/sources/prometheus/prometheus.ts";
import { PIECE_BYTES } from "../../../src/sources/prometheus/text_stream.ts";
import type { Reading } from "../../../src/sources/source.ts";
import { MAX_LINE_CHARS } from "../../../src/sources/prometheus/text_parser.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { type HostileExporter, startHostileExporter } from "../../../scripts/peers/prometheus_exporter.ts";

const DEFAULT_MAX_BODY_BYTES = testConfig().prometheus_max_body_bytes;
const DEFAULT_MAX_SERIES = testConfig().prometheus_max_series;

async function pollOnce(exporter: HostileExporter, path: string, overrides: Record<string, number> = {}) {
  const entry = entryFor(`prometheus://127.0.0.1:${exporter.port}/${path}`);
  const source = prometheus.create([entry], { options: testConfig(overrides), timeoutMs: 30_000 });
  try {
    return await source.poll([entry], AbortSignal.timeout(30_000));
  } finally {
    await source.close();
  }
}

Deno.test("prometheus source stops reading a 200 MB chunked body at prometheus_max_body_bytes", async () => {
  const exporter = await startHostileExporter({ kind: "endless", totalBytes: 200 * 1024 * 1024 });
  try {
    const probe = await fetch(exporter.url);
    assert.equal(probe.headers.get("content-length"), null, "the body must go out chunked");
    await probe.body?.cancel();
    await assert.rejects(
      pollOnce(exporter, "a"),
      new RegExp(
        `^Error: Exporter ${exporter.url} sent more than ${DEFAULT_MAX_BODY_BYTES} bytes \\(prometheus_max_body_bytes\\)$`,
      ),
    );
    // The rest of the 200 MB was never produced: the collector let the connection go.
    await exporter.cancelled;
    assert.ok(exporter.bytesSent() < 2 * DEFAULT_MAX_BODY_BYTES, `${exporter.bytesSent()} bytes were sent`);
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source refuses a body whose Content-Length exceeds prometheus_max_body_bytes before reading it", async () => {
  const exporter = await startHostileExporter({ kind: "series", series: 200 });
  try {
    await assert.rejects(
      pollOnce(exporter, "a", { prometheus_max_body_bytes: 1024 }),
      new RegExp(
        `^Error: Exporter ${exporter.url} sent \\d+ bytes, more than the 1024 accepted \\(prometheus_max_body_bytes\\)$`,
      ),
    );
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source fails 100,000 series in 2.4 MB at prometheus_max_series", async () => {
  const exporter = await startHostileExporter({ kind: "series", series: 100_000 });
  try {
    assert.ok(exporter.bodyBytes < 2.5e6, `${exporter.bodyBytes} bytes`);
    await assert.rejects(
      pollOnce(exporter, ""),
      new RegExp(
        `^Error: Exporter ${exporter.url} sent more than ${DEFAULT_MAX_SERIES} series selected by its entries ` +
          `\\(prometheus_max_series\\)$`,
      ),
    );
    // Series the entries do not select cost no memory, so they do not count.
    const one = await pollOnce(exporter, "other_metric");
    assert.deepEqual(one.readings.map((r) => r.value), [7]);
    // An operator who needs them all raises the bound.
    const all = await pollOnce(exporter, "", { prometheus_max_series: 100_001 });
    assert.equal(all.readings.length, 100_001);
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source cuts a gzip bomb after prometheus_max_body_bytes of decoded text", async () => {
  const exporter = await startHostileExporter({ kind: "gzip-bomb", decodedBytes: 256 * 1024 * 1024 });
  try {
    await assert.rejects(
      pollOnce(exporter, "a"),
      new RegExp(
        `^Error: Exporter ${exporter.url} sent more than ${DEFAULT_MAX_BODY_BYTES} bytes once decoded from gzip ` +
          `\\(prometheus_max_body_bytes\\)$`,
      ),
    );
    assert.ok(exporter.bodyBytes < 1024 * 1024, `the bomb is ${exporter.bodyBytes} bytes on the wire`);
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source refuses a body in an encoding it did not ask for", async () => {
  const exporter = await startHostileExporter({ kind: "encoding", encoding: "zstd" });
  try {
    await assert.rejects(
      pollOnce(exporter, "a"),
      new RegExp(`^Error: Exporter ${exporter.url} sent a body in encoding 'zstd' \\(accepted: gzip, br, identity\\)$`),
    );
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source reports a line with no end once and reads the lines after it", async () => {
  const exporter = await startHostileExporter({ kind: "long-line", lineChars: 4 * MAX_LINE_CHARS });
  try {
    const result = await pollOnce(exporter, "");
    assert.deepEqual(result.readings.map((r) => [r.metricId, r.value]), [["prom_before", 1], ["prom_after", 2]]);
    assert.deepEqual(result.errors.map((e) => e.message), [
      `Malformed line 2 from ${exporter.url}: Line longer than ${MAX_LINE_CHARS} characters`,
    ]);
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source reports ten malformed lines per scrape and counts the others", async () => {
  const exporter = await startHostileExporter({ kind: "malformed", lines: 100_000 });
  try {
    const entries = [
      entryFor(`prometheus://127.0.0.1:${exporter.port}/ok`, { deviceId: "d1" }),
      entryFor(`prometheus://127.0.0.1:${exporter.port}/ok`, { deviceId: "d2" }),
    ];
    const source = prometheus.create(entries, { options: testConfig(), timeoutMs: 30_000 });
    const result = await source.poll(entries, AbortSignal.timeout(30_000));
    assert.deepEqual(result.readings.map((r) => [r.entry.deviceId, r.value]), [["d1", 1], ["d2", 1]]);
    for (const entry of entries) {
      const messages = result.errors.filter((e) => e.entry === entry).map((e) => e.message);
      assert.equal(messages.length, 11);
      assert.equal(messages[0], `Malformed line 2 from ${exporter.url}: Invalid metric name in '{broken} 1'`);
      assert.equal(messages[10], `99990 more lines from ${exporter.url} could not be read in this scrape`);
    }
    await source.close();
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source hands its readings over in parts as it parses, reading on only once each is taken", async () => {
  const series = 30_000;
  const exporter = await startHostileExporter({ kind: "series", series });
  const entry = entryFor(`prometheus://127.0.0.1:${exporter.port}/series_a`);
  const source = prometheus.create([entry], { options: testConfig(), timeoutMs: 30_000 });
  try {
    const parts: Reading[][] = [];
    let taking = false;
    const result = await source.poll([entry], AbortSignal.timeout(30_000), async (readings) => {
      assert.ok(!taking, "a part was handed over before the previous one was taken");
      taking = true;
      parts.push(readings);
      await new Promise((resolve) => setTimeout(resolve, 1));
      taking = false;
    });
    assert.ok(parts.length >= 2, `${parts.length} parts`);
    // A line of this exporter is at least 15 bytes: a piece of text holds at most this many.
    const mostPerPiece = Math.ceil(PIECE_BYTES / 15);
    for (const part of parts) assert.ok(part.length <= PART_READINGS + mostPerPiece, `a part of ${part.length}`);
    const all = [...parts.flat(), ...result.readings];
    assert.equal(all.length, series, "every series once, in the parts or in the result");
    assert.deepEqual(all.map((r) => r.labels?.i), Array.from({ length: series }, (_, i) => `${i}`), "in order");
  } finally {
    await source.close();
    await exporter.close();
  }
});
