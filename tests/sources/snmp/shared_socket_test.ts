import assert from "node:assert/strict";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import { requestIdOf } from "../../../src/sources/snmp/request_id.ts";
import { sharedDgram } from "../../../src/sources/snmp/shared_socket.ts";
import { snmp } from "../../../src/sources/snmp/snmp.ts";
import type { Source } from "../../../src/sources/source.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { freeUdpPort, OIDS, type Snmpd, SYS_NAME, V3_USERS } from "../../../scripts/peers/snmpd.ts";
import { startSnmpsim } from "../../../scripts/peers/snmpsim.ts";
import { valueOf, withSnmpd } from "./agent_helpers.ts";

const TIMEOUT_MS = 3000;
const config = testConfig({ snmp_timeout_ms: 2500 });
const ctx = { options: config, timeoutMs: TIMEOUT_MS };

function v2c(host: string, port: number, oid: string, community = "public"): MetricEntry {
  return entryFor(`snmp://${community}@${host}:${port}/${oid}`, { name: "m" });
}

/** UDP sockets this process holds: its socket descriptors found in /proc/net/udp and udp6. */
async function ownUdpSockets(): Promise<number> {
  const inodes = new Set<string>();
  for await (const fd of Deno.readDir("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(await Deno.readLink(`/proc/self/fd/${fd.name}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // Closed meanwhile (the descriptor of readDir itself).
    }
  }
  let count = 0;
  for (const table of ["/proc/self/net/udp", "/proc/self/net/udp6"]) {
    for (const line of (await Deno.readTextFile(table)).split("\n").slice(1)) {
      const inode = line.trim().split(/\s+/)[9];
      if (inode && inodes.has(inode)) count++;
    }
  }
  return count;
}

async function closeAll(sources: Source[]): Promise<void> {
  await Promise.all(sources.map((s) => s.close()));
  // node:dgram closes a socket on the next turn of the event loop.
  await new Promise((r) => setTimeout(r, 50));
}

Deno.test("snmp sessions share a UDP socket 128 at a time, closed with its last session", () =>
  withSnmpd(async (agent) => {
    const before = await ownUdpSockets();
    const entries = Array.from({ length: 130 }, () => v2c("127.0.0.1", agent.port, OIDS.gauge));
    const sources = entries.map((e) => snmp.create([e], ctx));
    try {
      for (let round = 0; round < 3; round++) {
        const results = await Promise.all(
          sources.map((s, i) => s.poll([entries[i]!], AbortSignal.timeout(TIMEOUT_MS))),
        );
        results.forEach((result, i) => assert.equal(valueOf(result, entries[i]!), 1234));
      }
      assert.equal((await ownUdpSockets()) - before, 2, "UDP sockets for 130 sessions");
    } finally {
      await closeAll(sources);
    }
    assert.equal(await ownUdpSockets(), before, "a shared socket outlived its sessions");
  }));

/** A v2c GetRequest for sysName.0 (BER written out by hand). */
function getSysName(id: number): Uint8Array {
  const tlv = (tag: number, content: number[]) => [tag, content.length, ...content];
  const varbinds = tlv(0x30, tlv(0x30, [...tlv(0x06, [0x2b, 6, 1, 2, 1, 1, 5, 0]), 0x05, 0x00]));
  const pdu = tlv(0xa0, [...tlv(0x02, [id >> 8, id & 0xff]), ...tlv(0x02, [0]), ...tlv(0x02, [0]), ...varbinds]);
  return new Uint8Array(tlv(0x30, [...tlv(0x02, [1]), ...tlv(0x04, [...new TextEncoder().encode("public")]), ...pdu]));
}

/**
 * What two shared sockets receive when each sends `getSysName(id)` of its own to the agent, the
 * second once the first is answered (or 2 s went by): the request ids each got, 100 ms after the
 * last answer (a stray delivery comes in the same turn of the event loop as the right one).
 */
async function answersOfTwoSockets(agent: Snmpd, ids: readonly [number, number]): Promise<number[][]> {
  const sockets = [sharedDgram.createSocket("udp4"), sharedDgram.createSocket("udp4")];
  const got: number[][] = [[], []];
  const closed = sockets.map((socket) => new Promise((resolve) => socket.once("close", resolve)));
  try {
    const answered = sockets.map((socket, i) =>
      new Promise<void>((resolve) => {
        socket.on("message", (msg: Uint8Array) => {
          got[i]!.push(requestIdOf(msg)!);
          resolve();
        });
      })
    );
    for (const [i, socket] of sockets.entries()) {
      socket.bind(undefined, "127.0.0.1");
      const request = getSysName(ids[i]!);
      await new Promise<void>((resolve, reject) =>
        socket.send(request, 0, request.length, agent.port, "127.0.0.1", (err) => err ? reject(err) : resolve())
      );
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([answered[i], new Promise((resolve) => timer = setTimeout(resolve, 2000))]);
      clearTimeout(timer);
    }
    await new Promise((r) => setTimeout(r, 100));
    return got;
  } finally {
    for (const socket of sockets) socket.close();
    await Promise.all(closed);
  }
}

Deno.test("snmp answers of one agent reach only the session on the shared socket that asked", () =>
  withSnmpd(async (agent) => {
    assert.deepEqual(await answersOfTwoSockets(agent, [1001, 1002]), [[1001], [1002]]);
  }));

Deno.test("snmp answer reaches the session waiting for it when another session of the agent sent the same request id before", () =>
  withSnmpd(async (agent) => {
    const got = await answersOfTwoSockets(agent, [4242, 4242]);
    assert.deepEqual(got[1], [4242], "the second socket's answer did not reach it");
  }));

Deno.test("snmp sessions to one agent with different communities each get their own answers", async () => {
  const sim = await startSnmpsim(["apc_ap8959eu3", "raritan-pdu_px3", "sentry4"]);
  const sysDescr = "1.3.6.1.2.1.1.1.0";
  const expected: Record<string, RegExp> = {
    apc_ap8959eu3: /^APC Web\/SNMP Management Card/,
    "raritan-pdu_px3": /^Raritan PDU/,
    sentry4: /^Sentry Smart PDU$/,
  };
  const entries = Object.keys(expected).map((community) => v2c("127.0.0.1", sim.port, sysDescr, community));
  const sources = entries.map((e) => snmp.create([e], ctx));
  try {
    for (let round = 0; round < 5; round++) {
      const results = await Promise.all(
        sources.map((s, i) => s.poll([entries[i]!], AbortSignal.timeout(TIMEOUT_MS))),
      );
      Object.values(expected).forEach((pattern, i) => assert.match(String(valueOf(results[i]!, entries[i]!)), pattern));
    }
  } finally {
    await closeAll(sources);
    await sim.stop();
  }
});

Deno.test("snmpv3 sessions of four users of one agent, polled together, each get their answers", () =>
  withSnmpd(async (agent) => {
    const at = `127.0.0.1:${agent.port}/${OIDS.sysName}`;
    const u = V3_USERS;
    const entries = [
      `snmpv3://${u.shaAes.name}:${u.shaAes.authPass}:${u.shaAes.privPass}@${at}`,
      `snmpv3://${u.md5Des.name}:${u.md5Des.authPass}:${u.md5Des.privPass}@${at}?auth=md5&priv=des`,
      `snmpv3://${u.authOnly.name}:${u.authOnly.authPass}@${at}?auth=sha`,
      `snmpv3://${u.noAuth.name}@${at}`,
    ].map((url) => entryFor(url, { name: "m" }));
    const sources = entries.map((e) => snmp.create([e], ctx));
    try {
      for (let round = 0; round < 3; round++) {
        const results = await Promise.all(
          sources.map((s, i) => s.poll([entries[i]!], AbortSignal.timeout(TIMEOUT_MS))),
        );
        results.forEach((result, i) => assert.equal(valueOf(result, entries[i]!), SYS_NAME));
      }
    } finally {
      await closeAll(sources);
    }
  }));

Deno.test("snmp poll aborted on a shared socket leaves another session's request in flight", () =>
  withSnmpd(async (agent) => {
    const dead = v2c("127.0.0.1", await freeUdpPort(), OIDS.gauge);
    const slow = v2c("127.0.0.1", agent.port, OIDS.slow);
    const deadSource = snmp.create([dead], { options: config, timeoutMs: 10_000 });
    const slowSource = snmp.create([slow], ctx);
    try {
      const asked = Date.now();
      const slowPoll = slowSource.poll([slow], AbortSignal.timeout(TIMEOUT_MS));
      const abort = new AbortController();
      const deadPoll = deadSource.poll([dead], abort.signal);
      setTimeout(() => abort.abort(new Error("stop now")), 200);
      await assert.rejects(deadPoll, /stop now/);
      // The slow OID's value is when snmpd got the request: the answer to the request sent
      // before the abort, not to a new one.
      const arrived = Number(valueOf(await slowPoll, slow));
      assert.ok(arrived >= asked - 1000 && arrived < asked + 1000, `request reached snmpd at ${arrived}`);
    } finally {
      await closeAll([deadSource, slowSource]);
    }
  }));

Deno.test("snmp source reaches an agent named by host name on a shared socket", () =>
  withSnmpd(async (agent) => {
    const byName = v2c("localhost", agent.port, OIDS.gauge);
    const byAddress = v2c("127.0.0.1", agent.port, OIDS.gauge);
    const sources = [snmp.create([byName], ctx), snmp.create([byAddress], ctx)];
    try {
      const [named, addressed] = await Promise.all([
        sources[0]!.poll([byName], AbortSignal.timeout(TIMEOUT_MS)),
        sources[1]!.poll([byAddress], AbortSignal.timeout(TIMEOUT_MS)),
      ]);
      assert.equal(valueOf(named, byName), 1234);
      assert.equal(valueOf(addressed, byAddress), 1234);
    } finally {
      await closeAll(sources);
    }
  }));
