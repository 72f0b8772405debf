/**
 * A slow PDU against the real scheduler and real agents: snmpd answers one OID 1.5 s after it is
 * asked (a pass_persist script that sleeps), polled every 1000 ms, next to a PDU recording served
 * by snmpsim at the same period. The slow device stores a sample every second slot, each stamped
 * when its request was sent; the other device keeps every slot. This runs on real time (the
 * peers do): its assertions are about grid slots (rounded to whole periods), not durations.
 */
import assert from "node:assert/strict";
import { systemClock } from "../../src/clock.ts";
import { buildGroups, protocolsOf } from "../../src/collect/groups.ts";
import { Scheduler } from "../../src/collect/scheduler.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { type Sample, samplesOf } from "../../src/sample.ts";
import { Telemetry } from "../../src/telemetry/telemetry.ts";
import { CONDITIONS } from "../../src/telemetry/events.ts";
import { testConfig } from "../../scripts/harness/config.ts";
import { entryFor } from "../../scripts/harness/entries.ts";
import { OIDS, startSnmpd } from "../../scripts/peers/snmpd.ts";
import { startSnmpsim } from "../../scripts/peers/snmpsim.ts";

const PERIOD_MS = 1000;
const RUN_MS = 11_000;
const PDU_POWER_OID = "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5";

/** Consecutive timestamp gaps, in whole periods. */
function slotGaps(samples: { timestampMs: number }[]): number[] {
  const t = samples.map((s) => s.timestampMs).sort((a, b) => a - b);
  return t.slice(1).map((x, i) => Math.round((x - t[i]!) / PERIOD_MS));
}

Deno.test({
  name: "scheduler stores a sample every 2 s from a device answering in 1.5 s at 1 s, stamped when sent",
  fn: async () => {
    const agent = await startSnmpd();
    const sim = await startSnmpsim(["raritan-pdu_px3"]);
    const logs: string[] = [];
    setLogSink((line) => logs.push(line));
    setLogLevel("info");
    try {
      const config = testConfig();
      const slow = entryFor(`snmp://public@127.0.0.1:${agent.port}/${OIDS.slow}`, {
        name: "slow_pdu_power",
        deviceId: "slow-pdu",
        updateEveryMs: PERIOD_MS,
      });
      const other = entryFor(`snmp://raritan-pdu_px3@127.0.0.1:${sim.port}/${PDU_POWER_OID}`, {
        name: "pdu_power",
        deviceId: "other-pdu",
        updateEveryMs: PERIOD_MS,
      });
      const { groups, problems } = buildGroups([slow, other], config, await protocolsOf([slow, other]));
      assert.deepEqual(problems, []);
      const delivered: (Sample & { deliveredAtMs: number })[] = [];
      const scheduler = new Scheduler({
        groups,
        config,
        clock: systemClock,
        telemetry: new Telemetry({ conditions: CONDITIONS }),
        deliver: (samples) => {
          delivered.push(...samplesOf(samples).map((s) => ({ ...s, deliveredAtMs: Date.now() })));
          return Promise.resolve();
        },
      });
      scheduler.start();
      await new Promise((r) => setTimeout(r, RUN_MS));
      await scheduler.stop();

      const slowSamples = delivered.filter((s) => s.deviceId === "slow-pdu");
      const otherSamples = delivered.filter((s) => s.deviceId === "other-pdu");
      const counters = (name: string) => scheduler.counters().find((c) => c.group.includes(name))!.counters;
      const slowCounters = counters(`:${agent.port}`);
      const otherCounters = counters(`:${sim.port}`);

      assert.ok(slowSamples.length >= 5, `${slowSamples.length} samples of the slow device in ${RUN_MS} ms`);
      // The first answer may take a slot longer: snmpd starts its pass_persist script on the first
      // request. From then on the device answers in 1.5 s, so it keeps every second slot.
      const steadyGaps = slotGaps(slowSamples).slice(1);
      assert.deepEqual(steadyGaps, steadyGaps.map(() => 2), "a sample every 2 s");
      for (const s of slowSamples) {
        const arrivedAtMs = s.value;
        assert.ok(arrivedAtMs - s.timestampMs >= -1 && arrivedAtMs - s.timestampMs < 500, "stamped before sending");
        assert.ok(s.deliveredAtMs - s.timestampMs >= 1450, "stamped when answered");
      }
      assert.equal(slowCounters.pollsFailed, 0);
      assert.ok(slowCounters.pollsSkipped >= 4, `${slowCounters.pollsSkipped} slots skipped and counted`);

      assert.ok(otherSamples.length >= 10, `${otherSamples.length} samples of the other device`);
      assert.deepEqual(slotGaps(otherSamples), slotGaps(otherSamples).map(() => 1), "the other device kept its slots");
      assert.equal(otherSamples.every((s) => s.value === 1665), true);
      assert.equal(otherCounters.pollsSkipped, 0);

      // Steadily slow: "behind schedule" is logged once, not at every other slot.
      assert.equal(logs.filter((l) => l.includes("Device slower than its period")).length, 1, logs.join("\n"));
      assert.equal(logs.filter((l) => l.includes("Device back on schedule")).length, 0, logs.join("\n"));
    } finally {
      setLogLevel("warning");
      setLogSink((line) => console.error(line));
      await sim.stop();
      await agent.stop();
    }
  },
});
