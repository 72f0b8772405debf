import assert from "node:assert/strict";
import { prometheus } from "../../../src/sources/prometheus/prometheus.ts";
import { toSample } from "../../../src/collect/scheduler.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { freePort } from "../../../scripts/peers/postgres.ts";
import { startExporter } from "../../../scripts/peers/prometheus_exporter.ts";
import { conformance } from "../conformance.ts";
import { tempDir } from "../../../scripts/harness/temp_dir.ts";

/** A real node exporter (Debian's prometheus-node-exporter) with a textfile directory. */
async function startNodeExporter(textfile: string) {
  const port = freePort();
  const dir = await tempDir("kwollector-test-");
  await Deno.writeTextFile(`${dir}/kwollect.prom`, textfile);
  const child = new Deno.Command("prometheus-node-exporter", {
    args: [
      `--web.listen-address=127.0.0.1:${port}`,
      `--collector.textfile.directory=${dir}`,
      "--no-collector.systemd",
      "--collector.disable-defaults",
      "--collector.textfile",
      "--collector.loadavg",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/metrics`);
      await r.body?.cancel();
      if (r.ok) break;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Served as is (a node exporter would refuse its inconsistent label sets). */
const CUSTOM = [
  'kwollect_custom{_metric_id="my_metric",_timestamp="1606389005.1234",job="x"} 42',
  'kwollect_custom{host="h"} 7',
  'kwollect_custom{_timestamp="soon"} 1',
  'feas_test_gauge{device="dev1",site="lab"} 42.5',
].join("\n") + "\n";

const TEXTFILE = 'feas_test_gauge{device="dev1",site="lab"} 42.5\nkwollect_custom{_metric_id="my_metric"} 3\n';

conformance("prometheus", prometheus, async () => {
  const exporter = await startNodeExporter(TEXTFILE);
  const dead = freePort();
  return {
    fixture: {
      entries: [
        entryFor(`prometheus://127.0.0.1:${exporter.port}/node_load1`, { name: "load" }),
        entryFor(`prometheus://127.0.0.1:${exporter.port}/feas_test_gauge`, { name: "gauge" }),
      ],
      unknownEntry: entryFor(`prometheus://127.0.0.1:${exporter.port}/node_no_such_metric`, { name: "absent" }),
      deadEntries: [entryFor(`prometheus://127.0.0.1:${dead}/node_load1`)],
    },
    teardown: exporter.stop,
  };
}, {
  replace: {
    "reports an unknown entry alone and still reads the others": {
      reason: "an exporter has no per-entry address to miss: as in Kwollect, a metric absent from a scrape yields no " +
        "sample (a malformed line is the per-entry error case, tested below)",
      name: "yields neither a reading nor an error for a metric absent from the scrape, and still reads the others",
      check: async (f) => {
        assert.ok(f.unknownEntry, "fixture has no unknownEntry");
        const all = [...f.entries, f.unknownEntry];
        const source = prometheus.create(all, { options: testConfig(), timeoutMs: 1500 });
        try {
          const result = await source.poll(all, AbortSignal.timeout(1500));
          assert.deepEqual(result.errors, []);
          assert.ok(!result.readings.some((r) => r.entry === f.unknownEntry), "a reading for an absent metric");
          for (const e of f.entries) assert.ok(result.readings.some((r) => r.entry === e), `no reading for ${e.url}`);
        } finally {
          await source.close();
        }
      },
    },
  },
});

Deno.test("prometheus source applies kwollect_custom rules, YAML labels and scale_factor", async () => {
  const exporter = startExporter({ body: () => CUSTOM });
  try {
    const entry = entryFor(`prometheus://127.0.0.1:${exporter.port}/kwollect_custom-feas_test_gauge`, {
      deviceId: "node-7",
      scaleFactor: 2,
      labels: { _device_alias: "node-7-bmc" },
    });
    const source = prometheus.create([entry], { options: testConfig(), timeoutMs: 2000 });
    const sent = Date.now();
    const result = await source.poll([entry], AbortSignal.timeout(2000));
    const samples = result.readings.map((r) => toSample(r, sent));
    const mine = samples.find((s) => s.metricId === "my_metric")!;
    assert.equal(mine.value, 84);
    assert.equal(mine.timestampMs, 1606389005123.4);
    assert.equal(mine.labels.job, "x");
    assert.equal(mine.labels._metric_origin, "prom_kwollect_custom");
    assert.equal(typeof mine.labels._metric_scrape_time, "number");
    assert.equal(mine.labels._device_alias, "node-7-bmc");
    assert.ok(!("_metric_id" in mine.labels) && !("_timestamp" in mine.labels));
    const plain = samples.find((s) => s.metricId === "prom_kwollect_custom")!;
    assert.equal(plain.value, 14);
    assert.equal(plain.timestampMs, sent);
    const gauge = samples.find((s) => s.metricId === "prom_feas_test_gauge")!;
    assert.equal(gauge.value, 85);
    assert.equal(gauge.deviceId, "node-7");
    assert.deepEqual(gauge.labels, { device: "dev1", site: "lab", _device_alias: "node-7-bmc" });
    assert.equal(result.errors.length, 1);
    assert.match(result.errors[0]!.message, /Cannot parse _timestamp 'soon'/);
    await source.close();
  } finally {
    await exporter.close();
  }
});

Deno.test("prometheus source reads kwollect_custom lines by Kwollect's rules when they arrive a byte at a time", async () => {
  const bytes = new TextEncoder().encode(CUSTOM);
  const server = startExporter({
    body: () => ({
      body: function* () {
        for (let at = 0; at < bytes.length; at++) yield bytes.slice(at, at + 1);
      },
    }),
  });
  try {
    const entry = entryFor(`prometheus://127.0.0.1:${server.port}/kwollect_custom`);
    const source = prometheus.create([entry], { options: testConfig(), timeoutMs: 10_000 });
    const result = await source.poll([entry], AbortSignal.timeout(10_000));
    const got = result.readings.map((r) => {
      const { _metric_scrape_time: _, ...labels } = r.labels!;
      return { metricId: r.metricId, value: r.value, timestampMs: r.timestampMs, labels };
    });
    assert.deepEqual(got, [
      {
        metricId: "my_metric",
        value: 42,
        timestampMs: 1606389005123.4,
        labels: { job: "x", _metric_origin: "prom_kwollect_custom" },
      },
      {
        metricId: "prom_kwollect_custom",
        value: 7,
        timestampMs: undefined,
        labels: { host: "h", _metric_origin: "prom_kwollect_custom" },
      },
    ]);
    assert.deepEqual(result.errors.map((e) => e.message), [
      `Line 3 from http://127.0.0.1:${server.port}/metrics: Cannot parse _timestamp 'soon' of kwollect_custom`,
    ]);
    await source.close();
  } finally {
    await server.close();
  }
});

Deno.test("prometheus source sends one request per exporter and cycle whatever the number of entries", async () => {
  let requests = 0;
  const server = startExporter({
    body: () => {
      requests++;
      return "a 1\nb 2\nc 3\n";
    },
  });
  try {
    const url = (p: string) => `prometheus://127.0.0.1:${server.port}/${p}`;
    const entries = [
      entryFor(url("a"), { deviceId: "d1" }),
      entryFor(url("b-c"), { deviceId: "d2" }),
      entryFor(url(""), { deviceId: "d3" }),
    ];
    const source = prometheus.create(entries, { options: testConfig(), timeoutMs: 2000 });
    const result = await source.poll(entries, AbortSignal.timeout(2000));
    assert.equal(requests, 1);
    const got = result.readings.map((r) => `${r.entry.deviceId}:${r.metricId}`).sort();
    assert.deepEqual(got, ["d1:prom_a", "d2:prom_b", "d2:prom_c", "d3:prom_a", "d3:prom_b", "d3:prom_c"]);
  } finally {
    await server.close();
  }
});

Deno.test("prometheus source names no series of an exporter with more than twice the series it keeps, until it has fewer", async () => {
  const wide = 25_000;
  const series = (n: number) => Array.from({ length: n }, (_, i) => `m{i="${i}"} ${i}`).join("\n") + "\n";
  const server = startExporter({ body: (n) => series(n === 3 || n === 4 ? wide : 100) });
  try {
    const entry = entryFor(`prometheus://127.0.0.1:${server.port}/`);
    const source = prometheus.create([entry], { options: testConfig(), timeoutMs: 10_000 });
    const named = async () => {
      const { readings, errors } = await source.poll([entry], AbortSignal.timeout(10_000));
      assert.deepEqual(errors, []);
      return readings.filter((r) => r.seriesKey !== undefined).length;
    };
    // Series are kept (and named) from the second scrape on.
    assert.equal(await named(), 0);
    assert.equal(await named(), 100);
    // 25,000: this scrape keeps what the source's cache holds (10,000 series), the next ones none.
    assert.equal(await named(), 10_000);
    assert.equal(await named(), 0);
    // 100 again: named from the scrape after the first with fewer.
    assert.equal(await named(), 0);
    assert.equal(await named(), 100);
    await source.close();
  } finally {
    await server.close();
  }
});

Deno.test("prometheus source fails the poll on an HTTP error status, naming the exporter", async () => {
  const server = startExporter({ body: () => ({ body: "no", status: 503 }) });
  try {
    const entry = entryFor(`prometheus://127.0.0.1:${server.port}/a`);
    const source = prometheus.create([entry], { options: testConfig(), timeoutMs: 2000 });
    await assert.rejects(source.poll([entry], AbortSignal.timeout(2000)), /HTTP 503/);
  } finally {
    await server.close();
  }
});

Deno.test("prometheus source validation asks for the exporter port", () => {
  const problem = prometheus.validate(entryFor("prometheus://host/node_load1"), testConfig());
  assert.match(problem ?? "", /Missing exporter port/);
});

Deno.test("prometheus source reads the empty _timestamp and _metric_id a node exporter pads with as absent", async () => {
  // Two kwollect_custom lines with different label sets: the real textfile collector serves the
  // second one as kwollect_custom{_metric_id="",_timestamp="",job="y"}.
  const exporter = await startNodeExporter(
    'kwollect_custom{_metric_id="my_metric",_timestamp="1606389005.5",job="x"} 42\nkwollect_custom{job="y"} 7\n',
  );
  try {
    const entry = entryFor(`prometheus://127.0.0.1:${exporter.port}/kwollect_custom`, { deviceId: "node-9" });
    const source = prometheus.create([entry], { options: testConfig(), timeoutMs: 2000 });
    const sent = Date.now();
    const result = await source.poll([entry], AbortSignal.timeout(2000));
    await source.close();
    assert.deepEqual(result.errors, []);
    const samples = result.readings.map((r) => toSample(r, sent));
    assert.equal(samples.length, 2);
    const padded = samples.find((s) => s.labels.job === "y")!;
    assert.equal(padded.metricId, "prom_kwollect_custom");
    assert.equal(padded.timestampMs, sent);
    assert.equal(padded.value, 7);
    assert.ok(!("_metric_id" in padded.labels) && !("_timestamp" in padded.labels), JSON.stringify(padded.labels));
    const full = samples.find((s) => s.labels.job === "x")!;
    assert.equal(full.metricId, "my_metric");
    assert.equal(full.timestampMs, 1606389005500);
  } finally {
    await exporter.stop();
  }
});
