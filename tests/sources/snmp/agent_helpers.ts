/** Helpers of the SNMP source's tests against a real snmpd. */
import assert from "node:assert/strict";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import type { PollResult } from "../../../src/sources/source.ts";
import { type Snmpd, startSnmpd } from "../../../scripts/peers/snmpd.ts";

/** The value `entry` read in `result`; fails naming the poll's errors when it read none. */
export function valueOf(result: PollResult, entry: MetricEntry): unknown {
  const r = result.readings.find((r) => r.entry === entry);
  assert.ok(r, `no reading for ${entry.url}: ${JSON.stringify(result.errors.map((e) => e.message))}`);
  return r.value;
}

/** Runs `fn` with an snmpd started for it, stopped afterwards whatever happens. */
export async function withSnmpd(fn: (agent: Snmpd) => Promise<void>): Promise<void> {
  const agent = await startSnmpd();
  try {
    await fn(agent);
  } finally {
    await agent.stop();
  }
}
