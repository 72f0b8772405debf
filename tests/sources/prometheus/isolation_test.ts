/**
 * A hostile exporter fails its own group, at every poll, with its own error; the exporters beside
 * it keep every slot of their schedule. Real exporters on 127.0.0.1, the real scheduler on fake
 * time: polls are counted, never timed. (That the event loop stays free for other groups' timers
 * during a large scrape is text_stream_test.ts's case, and the hostile bench measures it.)
 */
import assert from "node:assert/strict";
import { Scheduler } from "../../../src/collect/scheduler.ts";
import { buildGroups, type PollGroup, protocolsOf } from "../../../src/collect/groups.ts";
import { type Sample, samplesOf } from "../../../src/sample.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { FakeClock, settle } from "../../helpers/fake_clock.ts";
import { startCountingExporter, startHostileExporter } from "../../../scripts/peers/prometheus_exporter.ts";

/** Wraps each group's source so the test knows, at any moment, how many polls are in flight. */
function countPolls(groups: PollGroup[]) {
  const inFlight = new Map<string, number>();
  const wrapped = groups.map((g): PollGroup => ({
    ...g,
    open(ctx) {
      const source = g.open(ctx);
      return {
        poll(active, signal) {
          inFlight.set(g.name, (inFlight.get(g.name) ?? 0) + 1);
          return source.poll(active, signal).finally(() => inFlight.set(g.name, inFlight.get(g.name)! - 1));
        },
        close: () => source.close(),
      };
    },
  }));
  const idle = () => [...inFlight.values()].every((n) => n === 0);
  return { groups: wrapped, idle };
}

Deno.test("a good exporter keeps every slot while hostile exporters beside it fail with their own errors", async () => {
  const good = startCountingExporter();
  const chunked = await startHostileExporter({ kind: "endless", totalBytes: 200 * 1024 * 1024 });
  const wide = await startHostileExporter({ kind: "series", series: 100_000 });
  const bomb = await startHostileExporter({ kind: "gzip-bomb", decodedBytes: 256 * 1024 * 1024 });
  const config = testConfig();
  const url = (port: number, path: string) => `prometheus://127.0.0.1:${port}/${path}`;
  const entries = [
    entryFor(url(good.port, "scrape_count"), { deviceId: "good" }),
    entryFor(url(chunked.port, "a"), { deviceId: "chunked" }),
    entryFor(url(wide.port, ""), { deviceId: "wide" }),
    entryFor(url(bomb.port, "a"), { deviceId: "bomb" }),
  ];
  const built = buildGroups(entries, config, await protocolsOf(entries));
  assert.deepEqual(built.problems, []);
  const { groups, idle } = countPolls(built.groups);
  const clock = new FakeClock();
  const delivered: Sample[] = [];
  const scheduler = new Scheduler({
    groups,
    config,
    clock,
    deliver: (samples) => {
      delivered.push(...samplesOf(samples));
      return Promise.resolve();
    },
  });
  const SECONDS = 4;
  try {
    scheduler.start();
    // The polls at start go out a few milliseconds apart: each ends before the next one starts.
    for (let ms = 0; ms < 4 * 2.5; ms++) {
      while (!idle()) await settle();
      await clock.advance(1);
    }
    for (let s = 0; s <= SECONDS; s++) {
      // Every poll launched so far ends (in real time) before the next second of fake time.
      while (!idle()) await settle();
      if (s < SECONDS) await clock.advance(1000);
    }
    await scheduler.stop();
  } finally {
    await Promise.all([good.close(), chunked.close(), wide.close(), bomb.close()]);
  }
  const counters = new Map(scheduler.counters().map((c) => [c.group, c.counters]));
  const of = (port: number) => counters.get(groups.find((g) => g.endpoint === `127.0.0.1:${port}`)!.name)!;
  // Once at start, then once a second: SECONDS or SECONDS + 1 polls, depending on the phase.
  const polls = of(good.port).pollsOk;
  assert.ok(polls >= SECONDS && polls <= SECONDS + 1, `the good exporter was polled ${polls} times`);
  assert.equal(of(good.port).pollsFailed, 0);
  assert.equal(of(good.port).pollsSkipped, 0);
  assert.deepEqual(
    delivered.map((s) => [s.deviceId, s.value]),
    Array.from({ length: polls }, (_, i) => ["good", i + 1]),
  );
  const errors = new Map(scheduler.deviceStatus().map((d) => [d.deviceId, d.lastError]));
  assert.equal(errors.get("good"), undefined);
  for (
    const [exporter, deviceId, error] of [
      [chunked, "chunked", `Exporter ${chunked.url} sent more than 16777216 bytes (prometheus_max_body_bytes)`],
      [
        wide,
        "wide",
        `Exporter ${wide.url} sent more than 50000 series selected by its entries (prometheus_max_series)`,
      ],
      [
        bomb,
        "bomb",
        `Exporter ${bomb.url} sent more than 16777216 bytes once decoded from gzip (prometheus_max_body_bytes)`,
      ],
    ] as const
  ) {
    const c = of(exporter.port);
    assert.ok(c.pollsFailed >= SECONDS, `${exporter.url} failed ${c.pollsFailed} polls`);
    assert.equal(c.pollsOk, 0);
    assert.equal(c.pollsSkipped, 0);
    assert.equal(errors.get(deviceId), error);
  }
});
