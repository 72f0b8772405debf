/**
 * Trust on first use for https metric urls (redfish_tls_verify: tofu, the default), against the
 * fake BMC's real TLS with self-signed certificates made by openssl: the first poll pins the
 * certificate in the spool, a swapped certificate is refused before any credential is sent, and
 * `kwollector trust` accepts the new one while the spool is held by a writer, as under `run`.
 */
import assert from "node:assert/strict";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import { redfish } from "../../../src/sources/redfish/redfish.ts";
import { SpoolTlsPins, type TlsPins } from "../../../src/spool/tls_pins.ts";
import { openSpool } from "../../../src/spool/spool.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { kwollector } from "../../../scripts/harness/collector.ts";
import { type FakeBmc, startFakeBmc } from "../../../scripts/peers/redfish_server.ts";
import { type LinkCutter, startLinkCutter } from "../../../scripts/peers/link_cutter.ts";

const THERMAL = "/redfish/v1/Chassis/1/Thermal";

/** The certificate's SHA-256 fingerprint as openssl prints it. */
async function opensslFingerprint(certFile: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: ["x509", "-in", certFile, "-noout", "-fingerprint", "-sha256"],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim().split("=")[1]!;
}

function entryVia(relay: LinkCutter, bmc: FakeBmc): MetricEntry {
  return entryFor(
    `https://${bmc.user}:${bmc.password}@127.0.0.1:${relay.port}${THERMAL}#Temperatures[0].ReadingCelsius`,
  );
}

async function pollOnce(entry: MetricEntry, pins: TlsPins) {
  const config = testConfig();
  assert.equal(redfish.validate(entry, config), undefined);
  const source = redfish.create([entry], { options: config, timeoutMs: 3000, tlsPins: pins });
  try {
    return await source.poll([entry], AbortSignal.timeout(3000));
  } finally {
    await source.close();
  }
}

/** Two BMCs with the same credentials and different certificates behind one relay. */
async function withSwap(
  fn: (
    ctx: { original: FakeBmc; impostor: FakeBmc; relay: LinkCutter; spoolPath: string; dir: string },
  ) => Promise<void>,
) {
  const original = await startFakeBmc();
  const impostor = await startFakeBmc();
  const relay = startLinkCutter({ port: original.port });
  const dir = await Deno.makeTempDir({ prefix: "kwollector-tofu-" });
  try {
    await fn({ original, impostor, relay, spoolPath: `${dir}/spool.db`, dir });
  } finally {
    await relay.close();
    await original.close();
    await impostor.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("https source under tofu pins the certificate in the spool at its first poll", async () => {
  await withSwap(async ({ original, relay, spoolPath }) => {
    const entry = entryVia(relay, original);
    const pins = SpoolTlsPins.open(spoolPath);
    try {
      assert.deepEqual(SpoolTlsPins.list(spoolPath), []);
      const first = await pollOnce(entry, pins);
      assert.deepEqual(first.errors, []);
      assert.equal(first.readings[0]?.value, 21);
      const pinned = SpoolTlsPins.list(spoolPath);
      assert.equal(pinned.length, 1);
      assert.equal(pinned[0]!.endpoint, `127.0.0.1:${relay.port}`);
      assert.equal(pinned[0]!.fingerprint256, await opensslFingerprint(original.certFile));
      assert.match(pinned[0]!.subject, /CN=ILO-CZ1234ABCD/);
      // The pin holds across sources (a restart): the same certificate keeps being accepted.
      const again = await pollOnce(entry, SpoolTlsPins.open(spoolPath));
      assert.equal(again.readings[0]?.value, 21);
      assert.equal(original.requests.get(THERMAL), 2);
    } finally {
      pins.close();
    }
  });
});

Deno.test("https source under tofu refuses a swapped certificate before sending any credential", async () => {
  await withSwap(async ({ original, impostor, relay, spoolPath }) => {
    const pins = SpoolTlsPins.open(spoolPath);
    try {
      await pollOnce(entryVia(relay, original), pins);
      relay.switchTo(impostor.port);
      const endpoint = `127.0.0.1:${relay.port}`;
      const [pinned, presented] = [
        await opensslFingerprint(original.certFile),
        await opensslFingerprint(impostor.certFile),
      ];
      await assert.rejects(pollOnce(entryVia(relay, impostor), pins), (err: Error) => {
        assert.ok(err.message.startsWith(`TLS certificate of ${endpoint} changed: pinned ${pinned} (`), err.message);
        assert.ok(err.message.includes(`presented ${presented} (`), err.message);
        assert.ok(
          err.message.endsWith(`accept it with: kwollector trust [CONFIG] ${endpoint} --fingerprint ${presented}`),
          err.message,
        );
        assert.ok(!err.message.includes(impostor.password), err.message);
        return true;
      });
      assert.ok(relay.connectionsTo(impostor.port) >= 1, "the impostor was never reached");
      assert.equal(impostor.requests.size, 0, "an HTTP request (with its credentials) reached the impostor");
      assert.equal(SpoolTlsPins.list(spoolPath)[0]!.fingerprint256, pinned, "the pin was replaced");
    } finally {
      pins.close();
    }
  });
});

Deno.test("kwollector trust pins a new certificate while a writer holds the spool, and the next poll accepts it", async () => {
  await withSwap(async ({ original, impostor: replacement, relay, spoolPath, dir }) => {
    const writer = openSpool({
      path: spoolPath,
      maxBytes: 1 << 30,
      fullPolicy: "drop_oldest",
      synchronous: "full",
      commitIntervalMs: 10,
    });
    const pins = SpoolTlsPins.open(spoolPath);
    try {
      await pollOnce(entryVia(relay, original), pins);
      relay.switchTo(replacement.port);
      await assert.rejects(pollOnce(entryVia(relay, replacement), pins), /changed/);
      const endpoint = `127.0.0.1:${relay.port}`;
      const fingerprint = await opensslFingerprint(replacement.certFile);
      const config = `${dir}/kwollector.yaml`;
      await Deno.writeTextFile(config, `spool_path: ${spoolPath}\n`);

      const wrong = await kwollector(["trust", config, endpoint, "--fingerprint", "AB:CD"]);
      assert.equal(wrong.code, 2, wrong.stderr);
      assert.match(wrong.stderr, new RegExp(`${endpoint} presents ${fingerprint}, not AB:CD: nothing pinned`));

      const trusted = await kwollector(["trust", config, endpoint, "--fingerprint", fingerprint.toLowerCase()]);
      assert.equal(trusted.code, 0, trusted.stderr);
      assert.match(trusted.stdout, new RegExp(`Pinned ${endpoint}: ${fingerprint}`));
      assert.match(trusted.stdout, new RegExp(`replaces ${await opensslFingerprint(original.certFile)}`));

      const after = await pollOnce(entryVia(relay, replacement), pins);
      assert.deepEqual(after.errors, []);
      assert.equal(after.readings[0]?.value, 21);
      assert.equal(replacement.requests.get(THERMAL), 1);
    } finally {
      pins.close();
      writer.close();
    }
  });
});

Deno.test("kwollector check lists https hosts as new, pinned or changed", async () => {
  await withSwap(async ({ original, impostor, relay, spoolPath, dir }) => {
    await Deno.mkdir(`${dir}/metrics.d`);
    const url = `https://${original.user}:${original.password}@127.0.0.1:${relay.port}${THERMAL}#Fans[0].Reading`;
    await Deno.writeTextFile(`${dir}/metrics.d/bmc.conf`, `- name: fan\n  device_id: node-1\n  url: ${url}\n`);
    const config = `${dir}/kwollector.yaml`;
    await Deno.writeTextFile(config, `spool_path: ${spoolPath}\nmetrics_dir: ${dir}/metrics.d\n`);
    const endpoint = `127.0.0.1:${relay.port}`;

    const fresh = await kwollector(["check", config]);
    assert.equal(fresh.code, 0, fresh.stderr);
    assert.match(fresh.stderr, new RegExp(`https ${endpoint}: new, its certificate is pinned at its first poll`));

    const pins = SpoolTlsPins.open(spoolPath);
    await pollOnce(entryFor(url), pins);
    pins.close();
    const fingerprint = await opensslFingerprint(original.certFile);
    const pinned = await kwollector(["check", config, "--probe"]);
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.match(pinned.stderr, new RegExp(`https ${endpoint}: pinned ${fingerprint} \\(.*\\); presents it`));
    assert.match(pinned.stdout, /node-1 fan 23/);

    relay.switchTo(impostor.port);
    const changed = await kwollector(["check", config, "--probe", "--json"]);
    assert.equal(changed.code, 0, changed.stderr);
    const tls = changed.stdout.trim().split("\n").map((l) => JSON.parse(l)).find((o) => o.tls !== undefined);
    assert.deepEqual(tls, {
      tls: endpoint,
      state: "changed",
      pinned_fingerprint256: fingerprint,
      presented_fingerprint256: await opensslFingerprint(impostor.certFile),
    });
    assert.equal(impostor.requests.size, 0, "check --probe sent a request to the changed host");
  });
});
