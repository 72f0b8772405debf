import assert from "node:assert/strict";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { CENTRAL_UNREACHABLE, CONDITIONS, POLL_FAILED, POLL_OK, ROWS_QUARANTINED } from "../../src/telemetry/events.ts";
import { exposition } from "../../src/telemetry/prometheus_endpoint.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";
import { ConfigError } from "../../src/config/errors.ts";
import { resolveConfig } from "../../src/config/resolve.ts";
import { parseListenAddress } from "../../src/config/defaults.ts";

function capture(level: "debug" | "info" | "warning" = "info"): { logs: string[]; restore(): void } {
  const logs: string[] = [];
  setLogSink((l) => logs.push(l));
  setLogLevel(level);
  return {
    logs,
    restore() {
      setLogLevel("warning");
      setLogSink((l) => console.error(l));
    },
  };
}

Deno.test("telemetry event logs at its level and counts in the same call", () => {
  const { logs, restore } = capture();
  try {
    const t = new Telemetry();
    t.emit(ROWS_QUARANTINED, { seq: 7, reason: "bad value" });
    t.emit(ROWS_QUARANTINED, { seq: 9, reason: "bad value" });
    assert.equal(t.value("kwollector_rows_quarantined_total"), 2);
    assert.deepEqual(logs, [
      'WARNING Sample rejected by the central database: quarantined seq=7 reason="bad value"',
      'WARNING Sample rejected by the central database: quarantined seq=9 reason="bad value"',
    ]);
  } finally {
    restore();
  }
});

Deno.test("telemetry counts events by their fixed and given labels, and a routine event stays out of the log", () => {
  const { logs, restore } = capture("info");
  try {
    const t = new Telemetry();
    t.emit(POLL_OK, {}, { labels: { protocol: "snmp" } });
    t.emit(POLL_OK, {}, { labels: { protocol: "snmp" } });
    t.emit(POLL_FAILED, {}, { labels: { protocol: "snmp" } });
    t.emit(POLL_OK, {}, { labels: { protocol: "modbus" }, n: 5 });
    assert.equal(t.value("kwollector_polls_total", { protocol: "snmp", result: "ok" }), 2);
    assert.equal(t.value("kwollector_polls_total", { result: "failed", protocol: "snmp" }), 1);
    assert.equal(t.value("kwollector_polls_total", { protocol: "modbus", result: "ok" }), 5);
    assert.equal(t.total("kwollector_polls_total"), 8);
    assert.deepEqual(logs, []);
  } finally {
    restore();
  }
});

Deno.test("telemetry condition is logged once when it starts and once when it ends, with its duration", () => {
  const { logs, restore } = capture();
  try {
    let now = 1_000_000;
    const t = new Telemetry({ now: () => now, conditions: CONDITIONS });
    for (let i = 0; i < 50; i++) t.begin(CENTRAL_UNREACHABLE, "central", { error: "refused" });
    assert.equal(t.isActive(CENTRAL_UNREACHABLE, "central"), true);
    const active = t.snapshot().find((p) => p.labels.condition === "central_unreachable");
    assert.equal(active?.value, 1);
    now += 42_000;
    t.end(CENTRAL_UNREACHABLE, "central");
    t.end(CENTRAL_UNREACHABLE, "central");
    assert.deepEqual(logs, [
      'WARNING Central database unreachable; samples are kept in the spool error="refused"',
      "INFO Central database reachable again; forwarding the backlog lasted_s=42",
    ]);
    assert.equal(t.snapshot().find((p) => p.labels.condition === "central_unreachable")?.value, 0);
  } finally {
    restore();
  }
});

Deno.test("telemetry condition noticed late counts its duration from when it really began", () => {
  const { logs, restore } = capture();
  try {
    let now = 1_000_000;
    const t = new Telemetry({ now: () => now, conditions: CONDITIONS });
    const lastAnswer = now;
    now += 60_000; // a black-holed database is noticed when the request times out
    t.begin(CENTRAL_UNREACHABLE, "central", { error: "timeout" }, undefined, lastAnswer);
    now += 36_000;
    t.end(CENTRAL_UNREACHABLE, "central");
    assert.equal(logs.at(-1), "INFO Central database reachable again; forwarding the backlog lasted_s=96");
  } finally {
    restore();
  }
});

Deno.test("telemetry condition logs again when its error changes while it lasts", () => {
  const { logs, restore } = capture();
  try {
    const t = new Telemetry();
    t.begin(CENTRAL_UNREACHABLE, "central", { error: "a" }, "a");
    t.begin(CENTRAL_UNREACHABLE, "central", { error: "a" }, "a");
    t.begin(CENTRAL_UNREACHABLE, "central", { error: "b" }, "b");
    assert.equal(logs.length, 2);
    assert.match(logs[1]!, /\(changed\) error="b"/);
  } finally {
    restore();
  }
});

Deno.test("telemetry renders the Prometheus text format with escaped labels and special values", () => {
  const text = exposition([
    { name: "b_total", help: "B things", type: "counter", labels: { path: 'a"b\\c\nd' }, value: 3 },
    { name: "a_hours", help: "A hours", type: "gauge", labels: {}, value: Infinity },
    { name: "b_total", help: "B things", type: "counter", labels: { path: "x" }, value: NaN },
  ]);
  assert.equal(
    text,
    [
      "# HELP a_hours A hours",
      "# TYPE a_hours gauge",
      "a_hours +Inf",
      "# HELP b_total B things",
      "# TYPE b_total counter",
      'b_total{path="a\\"b\\\\c\\nd"} 3',
      'b_total{path="x"} NaN',
      "",
    ].join("\n"),
  );
});

Deno.test("metrics_listen accepts host:port, [ipv6]:port and :port and rejects anything else with the value quoted", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:9101"), { hostname: "127.0.0.1", port: 9101 });
  assert.deepEqual(parseListenAddress("[::1]:9101"), { hostname: "::1", port: 9101 });
  assert.deepEqual(parseListenAddress(":9101"), { hostname: "0.0.0.0", port: 9101 });
  assert.deepEqual(parseListenAddress("localhost:80"), { hostname: "localhost", port: 80 });
  for (const bad of ["9101", "host:", "host:0", "host:70000", "a:b:c", "[::1]"]) {
    assert.equal(parseListenAddress(bad), undefined, bad);
  }
  assert.equal(resolveConfig({ flags: {}, env: {} }).config.metrics_listen, "");
  assert.throws(
    () => resolveConfig({ flags: { metrics_listen: "localhost" }, env: {} }),
    (e: unknown) =>
      e instanceof ConfigError && /metrics_listen: Invalid value "localhost": expected host:port/.test(e.message),
  );
});
