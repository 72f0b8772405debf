import assert from "node:assert/strict";
import {
  PHASE_STEP_MS,
  phaseOf,
  POLL_HELD_MAX,
  POLL_HELD_UNCACHED_MAX,
  samplesOfPoll,
  Scheduler,
} from "../../src/collect/scheduler.ts";
import { buildGroups } from "../../src/collect/groups.ts";
import type { MetricEntry } from "../../src/config/metrics_dir.ts";
import { type Sample, samplesOf } from "../../src/sample.ts";
import type { Protocols } from "../../src/sources/registry.ts";
import type { HandOver, PollResult, Protocol, Reading } from "../../src/sources/source.ts";
import { entryFor } from "../../scripts/harness/entries.ts";
import { testConfig } from "../../scripts/harness/config.ts";
import { FakeClock } from "../helpers/fake_clock.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { CONDITIONS } from "../../src/telemetry/events.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";

/** A protocol of scheme test:// whose groups are its hosts, polled by the sources `create` makes. */
function testProtocol(create: Protocol["create"]): Protocol {
  return {
    configKeys: [],
    validate: () => undefined,
    groupKey: (e) => `test://${e.target.host}`,
    endpoint: (e) => e.target.host,
    create,
  };
}

/**
 * A scripted protocol: each host answers after `delayMs[host]` of fake time (or never when
 * "dead"), and every poll is recorded with the fake time it started.
 */
function scriptedProtocol(clock: FakeClock, behaviour: Record<string, number | "dead" | { ignoresAbortMs: number }>) {
  const polls: { host: string; at: number; entries: string[] }[] = [];
  const protocol = testProtocol((entries) => ({
    poll(active: readonly MetricEntry[], signal: AbortSignal): Promise<PollResult> {
      const host = entries[0]!.target.host;
      polls.push({ host, at: clock.monotonic(), entries: active.map((e) => e.name) });
      const delay = behaviour[host] ?? 0;
      return new Promise((resolve, reject) => {
        if (typeof delay === "object") {
          clock.setTimeout(() => resolve({ readings: [], errors: [] }), delay.ignoresAbortMs);
          return;
        }
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        if (delay === "dead") return;
        clock.setTimeout(() => resolve({ readings: active.map((e) => ({ entry: e, value: 1 })), errors: [] }), delay);
      });
    },
    close: () => Promise.resolve(),
  }));
  return { protocol, polls };
}

/** The protocols the test's groups are built with: test:// while `withProtocol` runs. */
let protocols: Protocols = new Map();

function withProtocol<T>(protocol: Protocol, fn: () => Promise<T>): Promise<T> {
  protocols = new Map([["test", protocol]]);
  return fn().finally(() => protocols = new Map());
}

/** Stops a scheduler running on fake time: time keeps moving until in-flight polls end. */
async function stopOn(clock: FakeClock, scheduler: Scheduler): Promise<void> {
  let done = false;
  const stopping = scheduler.stop().then(() => {
    done = true;
  });
  while (!done) await clock.advance(100);
  await stopping;
}

function startScheduler(
  clock: FakeClock,
  entries: MetricEntry[],
  delivered: Sample[],
  overrides: Record<string, number> = {},
) {
  const config = testConfig(overrides);
  const { groups, problems } = buildGroups(entries, config, protocols);
  assert.deepEqual(problems, []);
  const scheduler = new Scheduler({
    groups,
    config,
    clock,
    deliver: (s) => {
      delivered.push(...samplesOf(s));
      return Promise.resolve();
    },
  });
  scheduler.start();
  return scheduler;
}

Deno.test("scheduler polls each entry at its own period, on a grid that does not drift", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { fast: 30, slow: 30 });
  await withProtocol(protocol, async () => {
    const delivered: Sample[] = [];
    const scheduler = startScheduler(clock, [
      entryFor("test://fast/a", { name: "a", updateEveryMs: 100 }),
      entryFor("test://fast/b", { name: "b", updateEveryMs: 1000 }),
    ], delivered);
    await clock.advance(10_000);
    await stopOn(clock, scheduler);
    const a = polls.filter((p) => p.entries.includes("a"));
    const b = polls.filter((p) => p.entries.includes("b"));
    // Once at start, then on the grid.
    assert.ok(a.length >= 100 && a.length <= 101, `a polled ${a.length} times`);
    assert.ok(b.length >= 10 && b.length <= 11, `b polled ${b.length} times`);
    // After the start, every poll of a starts exactly on its 100 ms grid: no drift after 100 periods.
    const phase = a[1]!.at % 100;
    for (const p of a.slice(1)) assert.equal(p.at % 100, phase);
    assert.equal(delivered.length, a.length + b.length);
  });
});

Deno.test("scheduler skips and counts the slots of a device slower than its period, without overlap", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { slow: 250 });
  await withProtocol(protocol, async () => {
    const scheduler = startScheduler(clock, [entryFor("test://slow/a", { updateEveryMs: 1000 })], []);
    // The device answers in 250 ms at a period of 1000 ms: no skip.
    await clock.advance(5000);
    assert.equal(scheduler.counters()[0]!.counters.pollsSkipped, 0);
    await stopOn(clock, scheduler);
    assert.ok(polls.length >= 4);
  });
  const clock2 = new FakeClock();
  const slow = scriptedProtocol(clock2, { slow: 2500 });
  await withProtocol(slow.protocol, async () => {
    const delivered: Sample[] = [];
    const scheduler = startScheduler(clock2, [entryFor("test://slow/a", { updateEveryMs: 1000 })], delivered);
    await clock2.advance(30_000);
    await stopOn(clock2, scheduler);
    const c = scheduler.counters()[0]!.counters;
    // A 2.5 s answer at a 1 s period: the poll succeeds (poll_timeout_ms does not follow the
    // period), the two slots due meanwhile are skipped and counted, never overlapped.
    assert.equal(c.pollsFailed, 0);
    assert.ok(c.pollsOk >= 9 && c.pollsOk <= 11, `ok ${c.pollsOk}`);
    assert.ok(c.pollsSkipped >= 2 * (c.pollsOk - 1), `skipped ${c.pollsSkipped}`);
    const starts = slow.polls.map((p) => p.at);
    assert.ok(starts.slice(1).every((t, i) => t - starts[i]! >= 2500), `overlap in ${starts}`);
    // On the grid: a sample every third slot, stamped when each request was sent.
    const stamps = delivered.map((s) => s.timestampMs);
    assert.deepEqual(stamps.slice(2).map((t, i) => t - stamps[i + 1]!), stamps.slice(2).map(() => 3000));
  });
});

Deno.test("scheduler fails a poll at poll_timeout_ms whatever its period, skipping the slots due meanwhile", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { dead: "dead" });
  await withProtocol(protocol, async () => {
    const scheduler = startScheduler(clock, [entryFor("test://dead/a", { updateEveryMs: 500 })], [], {
      poll_timeout_ms: 2000,
    });
    await clock.advance(20_000);
    await stopOn(clock, scheduler);
    const c = scheduler.counters()[0]!.counters;
    assert.ok(c.pollsFailed >= 8 && c.pollsFailed <= 10, `failed ${c.pollsFailed}`);
    assert.ok(c.pollsSkipped >= 3 * (c.pollsFailed - 1), `skipped ${c.pollsSkipped}`);
    const starts = polls.map((p) => p.at);
    assert.ok(starts.slice(1).every((t, i) => t - starts[i]! >= 2000), `overlap in ${starts}`);
    assert.match(scheduler.deviceStatus()[0]?.lastError ?? "", /timed out after 2000 ms/);
  });
});

Deno.test("scheduler keeps healthy devices on time while another device is dead", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { dead: "dead", healthy: 5 });
  await withProtocol(protocol, async () => {
    const scheduler = startScheduler(
      clock,
      [
        entryFor("test://dead/a", { name: "d", updateEveryMs: 500 }),
        entryFor("test://healthy/a", { name: "h", updateEveryMs: 500 }),
      ],
      [],
      { poll_timeout_ms: 450 },
    );
    await clock.advance(5000);
    await stopOn(clock, scheduler);
    const healthy = polls.filter((p) => p.host === "healthy");
    assert.ok(healthy.length >= 9, `healthy polled ${healthy.length} times`);
    const phase = healthy[1]!.at % 500;
    for (const p of healthy.slice(1)) assert.equal(p.at % 500, phase, "a healthy poll was delayed");
    const counters = scheduler.counters();
    const dead = counters.find((c) => c.group.startsWith("test://dead"))!.counters;
    assert.ok(dead.pollsFailed >= 9);
    const status = scheduler.deviceStatus().find((d) => d.deviceId === "test-device" && d.key.includes("dead"));
    assert.match(status?.lastError ?? "", /timed out after 450 ms/);
  });
});

Deno.test("scheduler timestamps samples when the request is sent, and polls only active entries", async () => {
  const clock = new FakeClock();
  const { protocol } = scriptedProtocol(clock, { h: 80 });
  await withProtocol(protocol, async () => {
    const delivered: Sample[] = [];
    const scheduler = startScheduler(clock, [
      entryFor("test://h/a", { name: "always", updateEveryMs: 1000 }),
      entryFor("test://h/b", { name: "opt", updateEveryMs: 1000, optional: true }),
    ], delivered);
    await clock.advance(3000);
    await stopOn(clock, scheduler);
    assert.ok(delivered.length >= 2);
    assert.ok(delivered.every((s) => s.metricId === "always"), "an optional entry was polled");
    // Sent on the grid (ms multiple of the period plus phase), not when the answer came 80 ms later.
    const stamps = delivered.slice(1).map((s) => s.timestampMs % 1000);
    assert.ok(stamps.every((t) => t === stamps[0]));
  });
});

Deno.test("scheduler polls on schedule when the wall clock is stepped back an hour", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { h: 1 });
  await withProtocol(protocol, async () => {
    const delivered: Sample[] = [];
    const scheduler = startScheduler(clock, [entryFor("test://h/a", { updateEveryMs: 1000 })], delivered);
    await clock.advance(3000);
    clock.stepWallClock(-3_600_000);
    await clock.advance(3000);
    await stopOn(clock, scheduler);
    assert.ok(polls.length >= 5, `polled ${polls.length} times`);
    const onGrid = polls.slice(1);
    const gaps = onGrid.slice(1).map((p, i) => p.at - onGrid[i]!.at);
    assert.ok(gaps.every((g) => g === 1000), `gaps ${gaps}`);
  });
});

Deno.test("scheduler polls each group once at start, then joins its grid at least half a period later", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { h: 1 });
  await withProtocol(protocol, async () => {
    const started = clock.monotonic();
    const scheduler = startScheduler(clock, [
      entryFor("test://h/a", { name: "a", updateEveryMs: 10_000 }),
      entryFor("test://h/b", { name: "b", updateEveryMs: 60_000 }),
    ], []);
    await clock.advance(200_000);
    await stopOn(clock, scheduler);
    for (const [name, period] of [["a", 10_000], ["b", 60_000]] as const) {
      const at = polls.filter((p) => p.entries.includes(name)).map((p) => p.at - started);
      assert.ok(at[0]! <= 2.5, `${name} first polled at ${at[0]} ms`);
      assert.ok(at[1]! >= period / 2 && at[1]! <= period * 1.5, `${name} joined its grid at ${at[1]} ms`);
      assert.equal(at[2]! - at[1]!, period);
    }
    assert.equal(scheduler.counters()[0]!.counters.pollsSkipped, 0);
  });
});

/** Starts `devices` one-entry groups of `periodMs` on fake time: when each was first polled (ms from start). */
async function firstPolls(devices: number, periodMs: number, runMs: number): Promise<Map<string, number>> {
  const clock = new FakeClock();
  const hosts = Array.from({ length: devices }, (_, i) => `h${i}`);
  const { protocol, polls } = scriptedProtocol(clock, {});
  return await withProtocol(protocol, async () => {
    const started = clock.monotonic();
    const scheduler = startScheduler(
      clock,
      hosts.map((h) => entryFor(`test://${h}/a`, { updateEveryMs: periodMs })),
      [],
    );
    await clock.advance(runMs);
    await stopOn(clock, scheduler);
    const first = new Map<string, number>();
    for (const p of polls) if (!first.has(p.host)) first.set(p.host, p.at - started);
    return first;
  });
}

Deno.test("scheduler asks a thousand devices at start one after the other in their phases' order, not at once", async () => {
  const first = await firstPolls(1000, 5000, 2499);
  assert.equal(first.size, 1000, `${first.size} of 1000 devices polled at start`);
  const times = [...first.values()].sort((a, b) => a - b);
  assert.equal(times[0], 0);
  assert.ok(times.every((t, i) => i === 0 || t - times[i - 1]! >= 2), `two devices asked within 2 ms: ${times}`);
  const phase = (host: string) => phaseOf(`test://${host}|5000`, 5000);
  const byPhase = [...first.keys()].sort((a, b) => phase(a) - phase(b));
  assert.deepEqual(byPhase.map((h) => first.get(h)), times);
});

Deno.test("scheduler's poll at start waits at most half the group's period", async () => {
  const first = await firstPolls(100, 100, 60);
  assert.equal(first.size, 100, `${first.size} of 100 devices polled at start`);
  const latest = Math.max(...first.values());
  assert.ok(latest <= 50, `a device of 100 ms period first polled after ${latest} ms`);
});

Deno.test("scheduler polls each slot once even when timers fire early", async () => {
  const clock = new FakeClock(Date.UTC(2026, 0, 1), { earlyMs: 1 });
  const { protocol, polls } = scriptedProtocol(clock, { h: 1 });
  await withProtocol(protocol, async () => {
    const scheduler = startScheduler(clock, [entryFor("test://h/a", { updateEveryMs: 100 })], []);
    await clock.advance(5000);
    await stopOn(clock, scheduler);
    assert.ok(polls.length >= 49 && polls.length <= 51, `polled ${polls.length} times in 50 slots`);
    assert.equal(scheduler.counters()[0]!.counters.pollsSkipped, 0);
  });
});

Deno.test("samplesOfPoll() keeps one sample per series and timestamp, the first entry's", () => {
  const defaults = entryFor("prometheus://h:9100/node_load1", { name: "prom_default_metrics", deviceId: "n1" });
  const all = entryFor("prometheus://h:9100/", { name: "prom_all_metrics", deviceId: "n1", scaleFactor: 2 });
  const load = (entry: MetricEntry, labels: Record<string, string>, timestampMs?: number) => ({
    entry,
    value: 0.5,
    metricId: "prom_node_load1",
    labels,
    ...(timestampMs !== undefined && { timestampMs }),
  });
  const t = 1_790_000_000_000;
  const { samples, refused } = samplesOfPoll(
    [
      load(defaults, { a: "1", b: "2" }),
      load(all, { b: "2", a: "1" }),
      load(all, { a: "1", b: "3" }),
      load(defaults, { _metric_id: "x" }, t + 1000),
      load(defaults, { _metric_id: "x" }, t + 2000),
    ],
    t + 5000,
    t + 5000,
  );
  assert.deepEqual(samples.map((s) => [s.value, s.labels, s.timestampMs - t]), [
    [0.5, { a: "1", b: "2" }, 5000],
    [1, { a: "1", b: "3" }, 5000],
    [0.5, { _metric_id: "x" }, 1000],
    [0.5, { _metric_id: "x" }, 2000],
  ]);
  assert.deepEqual(refused, []);
});

Deno.test("samplesOfPoll() refuses a reading the central database could never store, naming its metric and unit", () => {
  const entry = entryFor("prometheus://h:9100/", { name: "all", deviceId: "n1" });
  const now = 1_790_000_000_000;
  const { samples, refused } = samplesOfPoll(
    [
      { entry, value: 1, metricId: "prom_ok", labels: {} },
      { entry, value: 2, metricId: "prom_ns", labels: {}, timestampMs: 1_733_380_000_000_000_000 },
    ],
    now,
    now,
  );
  assert.deepEqual(samples.map((s) => s.metricId), ["prom_ok"]);
  assert.equal(refused.length, 1);
  assert.equal(refused[0]!.subject, "prom_ns");
  assert.match(refused[0]!.message, /Sample of prom_ns refused: Timestamp .* looks like nanoseconds/);
});

/** Runs `fn` with the info logs captured in `logs`. */
async function withLogs(fn: (logs: string[]) => Promise<void>): Promise<void> {
  const logs: string[] = [];
  setLogSink((line) => logs.push(line));
  setLogLevel("info");
  try {
    await fn(logs);
  } finally {
    setLogLevel("warning");
    setLogSink((line) => console.error(line));
  }
}

/** A started scheduler of `entries` whose telemetry the test reads. */
function startCounted(clock: FakeClock, entries: MetricEntry[]) {
  const config = testConfig();
  const { groups } = buildGroups(entries, config, protocols);
  const telemetry = new Telemetry({ conditions: CONDITIONS, now: () => clock.monotonic() });
  const scheduler = new Scheduler({ groups, config, clock, telemetry, deliver: () => Promise.resolve() });
  scheduler.start();
  return { scheduler, telemetry };
}

Deno.test("scheduler accounts for every grid slot: polled, skipped, or missed while the process was stalled", async () => {
  const clock = new FakeClock();
  const { protocol, polls } = scriptedProtocol(clock, { fast: 30, slow: 2500 });
  await withLogs((logs) =>
    withProtocol(protocol, async () => {
      const { scheduler, telemetry } = startCounted(clock, [
        entryFor("test://fast/a", { updateEveryMs: 1000 }),
        entryFor("test://slow/b", { updateEveryMs: 1000 }),
      ]);
      await clock.advance(5_000);
      // The process stops for 3.5 s: the slots due meanwhile are neither polled nor skipped.
      clock.stall(3_500);
      await clock.advance(5_000);
      const endMs = clock.monotonic();
      // Stopping arms no slot and lets the poll in flight finish, so each slot's result is counted.
      await stopOn(clock, scheduler);
      const counted = scheduler.counters();

      for (const host of ["fast", "slow"]) {
        const c = counted.find((g) => g.group.includes(host))!.counters;
        const starts = polls.filter((p) => p.host === host).map((p) => p.at);
        // The poll at start (at 0) is off the grid; the group's grid (the second poll is on it)
        // begins more than half a period later (a phase of 500 ms: at 1500 ms).
        const phase = starts[1]! % 1000;
        const firstSlot = phase > 500 ? phase : phase + 1000;
        const gridSlots = Math.floor((endMs - firstSlot) / 1000) + 1;
        assert.ok(c.pollsMissed >= 2, `${host}: ${c.pollsMissed} slots missed`);
        assert.equal(c.pollsOk - 1 + c.pollsFailed + c.pollsSkipped + c.pollsMissed, gridSlots, JSON.stringify(c));
      }
      const missed = telemetry.snapshot().filter((p) =>
        p.name === "kwollector_polls_total" && p.labels.result === "missed"
      );
      assert.equal(
        missed.reduce((sum, p) => sum + p.value, 0),
        counted.reduce((sum, g) => sum + g.counters.pollsMissed, 0),
      );
      // One warning for the stall, whatever the number of groups.
      assert.equal(logs.filter((l) => l.includes("Collector late: poll slots missed")).length, 1, logs.join("\n"));
    })
  );
});

Deno.test("scheduler says the collector is back on time after a quiet minute without a missed slot", async () => {
  const clock = new FakeClock();
  const { protocol } = scriptedProtocol(clock, { fast: 30 });
  await withLogs((logs) =>
    withProtocol(protocol, async () => {
      const { scheduler } = startCounted(clock, [entryFor("test://fast/a", { updateEveryMs: 1000 })]);
      await clock.advance(3_000);
      clock.stall(2_500);
      await clock.advance(30_000);
      assert.equal(logs.filter((l) => l.includes("Collector back on time")).length, 0);
      await clock.advance(31_000);
      await stopOn(clock, scheduler);
      assert.equal(logs.filter((l) => l.includes("Collector back on time")).length, 1, logs.join("\n"));
    })
  );
});

/** Starts a scheduler of the one group "test://wide/a" (polled at start, then every minute) on fake time. */
function wideDeviceScheduler(clock: FakeClock, deliver: (samples: Sample[]) => Promise<void>): Scheduler {
  const config = testConfig();
  const { groups } = buildGroups([entryFor("test://wide/a", { name: "a", updateEveryMs: 60_000 })], config, protocols);
  const scheduler = new Scheduler({ groups, config, clock, deliver: (s) => deliver(samplesOf(s)) });
  scheduler.start();
  return scheduler;
}

Deno.test("scheduler hands a large poll to the spool in parts, and other timers run between the parts", async () => {
  const clock = new FakeClock();
  const readings = 100_000;
  const protocol = testProtocol(() => ({
    poll: (active) =>
      Promise.resolve({
        readings: Array.from(
          { length: readings },
          (_, i) => ({ entry: active[0]!, value: i, labels: { i: `${i}` } }),
        ),
        errors: [],
      }),
    close: () => Promise.resolve(),
  }));
  await withProtocol(protocol, async () => {
    const parts: number[] = [];
    /** How many parts had arrived when a timer set at the first one ran. */
    let partsSeenByTimer = 0;
    const scheduler = wideDeviceScheduler(clock, (s) => {
      if (parts.length === 0) setTimeout(() => partsSeenByTimer = parts.length, 0);
      parts.push(s.length);
      return Promise.resolve();
    });
    await stopOn(clock, scheduler);
    assert.equal(parts.reduce((a, b) => a + b, 0), readings, "every reading became a sample, once");
    assert.ok(parts.length >= 2, `one part of ${parts[0]} samples`);
    assert.ok(partsSeenByTimer < parts.length, "the timer waited for the whole poll");
    assert.equal(scheduler.counters()[0]!.counters.samples, readings);
  });
});

/**
 * A protocol whose poll hands `parts` parts of `perPart` readings over, waiting for each, then
 * returns; with `seriesKeys`, each reading names its series (so it gets a cached identity).
 */
function handingOverProtocol(
  parts: number,
  perPart: number,
  after: (handOver: HandOver) => Promise<void>,
  seriesKeys = false,
) {
  const protocol = testProtocol(() => ({
    async poll(active: readonly MetricEntry[], _signal: AbortSignal, handOver?: HandOver): Promise<PollResult> {
      assert.ok(handOver, "the scheduler offers a hand-over");
      for (let p = 0; p < parts; p++) {
        // Series i of part p: part 1 repeats part 0's first series, a duplicate of the poll.
        const first = p === 1 ? 0 : p * perPart;
        const readings: Reading[] = Array.from({ length: perPart }, (_, i) => {
          const series = `${i === 0 ? first : p * perPart + i}`;
          const reading: Reading = { entry: active[0]!, value: p, labels: { i: series } };
          if (seriesKeys) reading.seriesKey = series;
          return reading;
        });
        await handOver(readings);
      }
      await after(handOver);
      return { readings: [], errors: [] };
    },
    close: () => Promise.resolve(),
  }));
  return { protocol };
}

Deno.test("scheduler lets a source read on only while few of its poll's samples wait for the spool", async () => {
  const clock = new FakeClock();
  const perPart = 1_000;
  const parts = 20;
  const { protocol } = handingOverProtocol(parts, perPart, () => Promise.resolve(), true);
  await withProtocol(protocol, async () => {
    // The spool stores what waits, one part at a time; the source reads on only as it does.
    const { stored, mostWaiting, acknowledged } = await pollPacedBySpool(clock);
    assert.equal(acknowledged, stored.length);
    assert.ok(mostWaiting > 0);
    assert.ok(
      mostWaiting <= POLL_HELD_MAX + perPart,
      `${mostWaiting} samples waited for the spool at once`,
    );
    assert.equal(stored.length, parts * perPart - 1, "every series once: the duplicate of part 1 is dropped");
    assert.equal(new Set(stored.map((s) => s.labels.i)).size, stored.length);
    assert.equal(stored.find((s) => s.labels.i === "0")!.value, 0, "the first reading of a series is kept");
  });
});

/**
 * Polls the wide device once with `protocol`, the spool storing one waiting part at a time as the
 * test's loop turns; returns what was stored, the most samples that waited at once, and how many
 * the scheduler counted acknowledged.
 */
async function pollPacedBySpool(clock: FakeClock) {
  const stored: Sample[] = [];
  const waiting: { samples: Sample[]; store: () => void }[] = [];
  let mostWaiting = 0;
  const scheduler = wideDeviceScheduler(clock, (samples) =>
    new Promise((resolve) => {
      waiting.push({ samples, store: resolve });
      mostWaiting = Math.max(mostWaiting, waiting.reduce((n, w) => n + w.samples.length, 0));
    }));
  // Until the poll has ended (its last samples reach the spool as it does) and nothing waits.
  const ended = () => scheduler.counters()[0]!.counters.pollsOk + scheduler.counters()[0]!.counters.pollsFailed > 0;
  while (!ended() || waiting.length > 0) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    const next = waiting.shift();
    if (!next) continue;
    stored.push(...next.samples);
    next.store();
  }
  await stopOn(clock, scheduler);
  return { stored, mostWaiting, acknowledged: scheduler.counters()[0]!.counters.samplesAcknowledged };
}

Deno.test("scheduler holds back at most POLL_HELD_UNCACHED_MAX samples of series without a cached identity", async () => {
  const clock = new FakeClock();
  const perPart = 500;
  const parts = 20;
  const { protocol } = handingOverProtocol(parts, perPart, () => Promise.resolve());
  await withProtocol(protocol, async () => {
    const { stored, mostWaiting } = await pollPacedBySpool(clock);
    assert.ok(stored.every((s) => s.series === undefined), "the readings name no series");
    assert.ok(mostWaiting > 0);
    assert.ok(
      mostWaiting <= POLL_HELD_UNCACHED_MAX + perPart,
      `${mostWaiting} samples waited for the spool at once`,
    );
    assert.equal(stored.length, parts * perPart - 1, "every series once: the duplicate of part 1 is dropped");
    assert.equal(new Set(stored.map((s) => s.labels.i)).size, stored.length);
  });
});

Deno.test("scheduler holds back up to POLL_HELD_MAX samples of known series: such a poll reaches the spool at once", async () => {
  const clock = new FakeClock();
  const perPart = 1_000;
  const parts = POLL_HELD_MAX / perPart;
  assert.ok(parts * perPart > POLL_HELD_UNCACHED_MAX);
  const { protocol } = handingOverProtocol(parts, perPart, () => Promise.resolve(), true);
  await withProtocol(protocol, async () => {
    const { stored, mostWaiting } = await pollPacedBySpool(clock);
    assert.ok(stored.every((s) => s.series !== undefined), "every series has its identity");
    assert.equal(stored.length, parts * perPart - 1, "every series once: the duplicate of part 1 is dropped");
    assert.equal(mostWaiting, stored.length, "all the poll's samples went to the spool together");
  });
});

Deno.test("scheduler takes no part a source hands over after its poll timed out, and counts the poll failed", async () => {
  const clock = new FakeClock();
  let late: Promise<string> | undefined;
  const { protocol } = handingOverProtocol(1, 10, (handOver) =>
    new Promise((resolve) => {
      // The source ignores the abort and hands a part over past the timeout.
      clock.setTimeout(() => {
        late = handOver([]).then(() => "taken", (err) => `refused: ${err.message}`);
        resolve();
      }, 2_000);
    }));
  await withProtocol(protocol, async () => {
    const delivered: Sample[] = [];
    const scheduler = startScheduler(
      clock,
      [entryFor("test://slow/a", { name: "a", updateEveryMs: 60_000 })],
      delivered,
      { poll_timeout_ms: 1_000 },
    );
    await clock.advance(3_000);
    await stopOn(clock, scheduler);
    assert.equal(await late, "refused: Poll of test://slow every 60000 ms timed out after 1000 ms");
    assert.equal(delivered.length, 10, "the part handed over in time is kept");
    const { counters } = scheduler.counters()[0]!;
    assert.equal(counters.pollsFailed, 1);
    assert.equal(counters.pollsOk, 0);
  });
});

Deno.test("scheduler polls the groups due at one instant in one wake-up, from one timer for all groups", async () => {
  const clock = new FakeClock();
  const polled: number[] = [];
  const instant = testProtocol(() => ({
    poll: (active) => {
      polled.push(clock.monotonic());
      return Promise.resolve({ readings: active.map((entry) => ({ entry, value: 1 })), errors: [] });
    },
    close: () => Promise.resolve(),
  }));
  await withProtocol(instant, async () => {
    const config = testConfig();
    const entries = Array.from({ length: 1000 }, (_, i) => entryFor(`test://h${i}/a`, { updateEveryMs: 5000 }));
    const { groups } = buildGroups(entries, config, protocols);
    const scheduler = new Scheduler({ groups, config, clock, deliver: () => Promise.resolve() });
    scheduler.start();
    await clock.advance(5_000);
    assert.equal(clock.pendingTimers(), 1, "one timer for a thousand groups");
    const before = { wakeups: clock.firedTimers(), polls: polled.length };
    await clock.advance(20_000);
    const polls = polled.length - before.polls;
    assert.equal(polls, 4000);
    // Phases are multiples of PHASE_STEP_MS: at most 5000 / PHASE_STEP_MS instants a period, whatever the number of groups.
    const wakeups = clock.firedTimers() - before.wakeups;
    assert.ok(wakeups <= 4 * (5000 / PHASE_STEP_MS), `${wakeups} wake-ups`);
    assert.ok(polled.every((at) => at < 5000 || at % PHASE_STEP_MS === 0), "a slot off its phase step");
    await stopOn(clock, scheduler);
  });
});
