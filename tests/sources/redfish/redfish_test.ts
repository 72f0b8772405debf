import assert from "node:assert/strict";
import type { Config } from "../../../src/config/defaults.ts";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import { toSample } from "../../../src/collect/scheduler.ts";
import { redfish } from "../../../src/sources/redfish/redfish.ts";
import type { PollResult, Protocol } from "../../../src/sources/source.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { type FakeBmc, startFakeBmc, startSilentPeer } from "../../../scripts/peers/redfish_server.ts";
import { conformance } from "../conformance.ts";

const CHASSIS = "/redfish/v1/Chassis/1";

function bmcUrl(bmc: FakeBmc, doc: string, path: string, opts: { password?: string; scheme?: string } = {}): string {
  return `${opts.scheme ?? "https"}://${bmc.user}:${
    opts.password ?? bmc.password
  }@127.0.0.1:${bmc.port}${CHASSIS}${doc}#${path}`;
}

function configWith(overrides: Partial<Config>): Config {
  return { ...testConfig(), ...overrides };
}

/** Creates a source for `entries`, polls it once per signal-less call, closes it afterwards. */
async function withSource<T>(
  entries: MetricEntry[],
  config: Config,
  fn: (poll: () => Promise<PollResult>) => Promise<T>,
): Promise<T> {
  for (const e of entries) assert.equal(redfish.validate(e, config), undefined, e.url);
  const source = redfish.create(entries, { options: config, timeoutMs: 3000 });
  try {
    return await fn(() => source.poll(entries, AbortSignal.timeout(3000)));
  } finally {
    await source.close();
  }
}

async function withBmc<T>(fn: (bmc: FakeBmc) => Promise<T>, opts: Parameters<typeof startFakeBmc>[0] = {}): Promise<T> {
  const bmc = await startFakeBmc(opts);
  try {
    return await fn(bmc);
  } finally {
    await bmc.close();
  }
}

function valueOf(result: PollResult, entry: MetricEntry): number {
  const r = result.readings.find((x) => x.entry === entry);
  assert.ok(r, `no reading for ${entry.url}`);
  return toSample(r, 0).value;
}

// The conformance suite trusts the fake BMC's self-signed certificate through redfish_ca_file,
// checked in full.
let trustedCert = "";
const trusting: Protocol = {
  configKeys: redfish.configKeys,
  validate: (entry, options) =>
    redfish.validate(entry, { ...options, redfish_ca_file: trustedCert, redfish_tls_verify: "full" }),
  groupKey: redfish.groupKey,
  endpoint: redfish.endpoint,
  create: (entries, ctx) =>
    redfish.create(entries, {
      ...ctx,
      options: { ...ctx.options, redfish_ca_file: trustedCert, redfish_tls_verify: "full" },
    }),
};

conformance("https", trusting, async () => {
  const bmc = await startFakeBmc();
  const silent = startSilentPeer();
  trustedCert = bmc.certFile;
  return {
    fixture: {
      entries: [
        entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"), { name: "bmc_temp_inlet_celsius" }),
        entryFor(bmcUrl(bmc, "/Thermal", "Fans[0].Reading"), { name: "bmc_fan_percent" }),
        entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerConsumedWatts"), { name: "bmc_node_power_watt" }),
      ],
      unknownEntry: entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[9].ReadingCelsius"), { name: "bmc_temp_x" }),
      deadEntries: [
        entryFor(`https://admin:pw@127.0.0.1:${silent.port}${CHASSIS}/Thermal#Temperatures[0].ReadingCelsius`),
      ],
    },
    teardown: async () => {
      silent.close();
      await bmc.close();
    },
  };
});

Deno.test("https source reads DMTF Thermal and Power readings as the BMC reports them", async () => {
  await withBmc(async (bmc) => {
    const inlet = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"));
    const cpu = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[1].ReadingCelsius"));
    const watts = entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerConsumedWatts"));
    const average = entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerMetrics.AverageConsumedWatts"));
    const redundancy = entryFor(bmcUrl(bmc, "/Power", "Redundancy[0].RedundancyEnabled"));
    const health = entryFor(bmcUrl(bmc, "/Power", "PowerSupplies[1].Status.Health"));
    const quotedKey = entryFor(bmcUrl(bmc, "/Power", "PowerSupplies[0]['@odata.id']"));
    const entries = [inlet, cpu, watts, average, redundancy, health, quotedKey];
    const result = await withSource(
      entries,
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      (poll) => poll(),
    );
    assert.deepEqual(result.errors, []);
    assert.equal(valueOf(result, inlet), 21);
    assert.equal(valueOf(result, cpu), 40.5);
    assert.equal(valueOf(result, watts), 187);
    assert.equal(valueOf(result, average), 190.5, "numeric text is a number");
    assert.equal(valueOf(result, redundancy), 1, "true is 1");
    const text = toSample(result.readings.find((r) => r.entry === health)!, 0);
    assert.ok(Number.isNaN(text.value));
    assert.equal(text.labels.value_str, "OK");
    assert.equal(
      toSample(result.readings.find((r) => r.entry === quotedKey)!, 0).labels.value_str,
      `${CHASSIS}/Power#/PowerSupplies/0`,
    );
  });
});

Deno.test("https source counts a negative index from the end of the array", async () => {
  await withBmc(async (bmc) => {
    const last = entryFor(bmcUrl(bmc, "/Power/FastPowerMeter", "PowerDetail[-1].Average"));
    const beforeLast = entryFor(bmcUrl(bmc, "/Power/FastPowerMeter", "PowerDetail[-2].Peak"));
    const tooFar = entryFor(bmcUrl(bmc, "/Power/FastPowerMeter", "PowerDetail[-4].Average"));
    const result = await withSource(
      [last, beforeLast, tooFar],
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      (poll) => poll(),
    );
    assert.equal(valueOf(result, last), 192);
    assert.equal(valueOf(result, beforeLast), 201);
    assert.equal(result.errors.length, 1);
    assert.equal(result.errors[0]!.entry, tooFar);
    assert.match(result.errors[0]!.message, /Index \[-4\] is out of range: 'PowerDetail' has 3 elements/);
  });
});

Deno.test("https source under redfish_tls_verify full refuses a self-signed certificate and says how to trust it", async () => {
  await withBmc(async (bmc) => {
    const entry = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"));
    await withSource([entry], configWith({ redfish_tls_verify: "full" }), async (poll) => {
      await assert.rejects(poll(), (err: Error) => {
        assert.match(
          err.message,
          new RegExp(`Cannot verify the TLS certificate of https://127\\.0\\.0\\.1:${bmc.port}`),
        );
        assert.match(err.message, /self-signed/);
        assert.match(err.message, /set redfish_tls_verify to 'tofu' to pin its certificate at first use/);
        assert.match(err.message, /redfish_ca_file/);
        return true;
      });
    });
    assert.equal(bmc.requests.get(`${CHASSIS}/Thermal`), undefined, "no request reached the BMC");
  });
});

Deno.test("https source accepts a self-signed certificate with redfish_ca_file or redfish_tls_verify none", async () => {
  await withBmc(async (bmc) => {
    const entry = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"));
    for (
      const config of [
        configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
        configWith({ redfish_tls_verify: "none" }),
      ]
    ) {
      const result = await withSource([entry], config, (poll) => poll());
      assert.equal(valueOf(result, entry), 21);
    }
  });
});

Deno.test("https source refuses a BMC whose certificate is not in redfish_ca_file", async () => {
  await withBmc(async (other) => {
    await withBmc(async (bmc) => {
      const entry = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"));
      await withSource(
        [entry],
        configWith({ redfish_ca_file: other.certFile, redfish_tls_verify: "full" }),
        async (poll) => {
          await assert.rejects(
            poll(),
            new RegExp(`not signed by a certificate of redfish_ca_file '${other.certFile}'`),
          );
        },
      );
    });
  });
});

Deno.test("https source with redfish_tls_verify ca accepts a trusted certificate that names another host", async () => {
  await withBmc(async (bmc) => {
    const entry = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"));
    await withSource(
      [entry],
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      async (poll) => {
        await assert.rejects(
          poll(),
          /Cannot verify the TLS certificate .*does not name this host: set redfish_tls_verify to 'ca'/,
        );
      },
    );
    const result = await withSource(
      [entry],
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "ca" }),
      (poll) => poll(),
    );
    assert.equal(valueOf(result, entry), 21);
  }, { subjectAltName: "DNS:ilo-cz1234abcd.example" });
});

Deno.test("https source sends one GET per document per cycle over kept-alive connections", async () => {
  await withBmc(async (bmc) => {
    const thermal = [0, 1].map((i) => entryFor(bmcUrl(bmc, "/Thermal", `Temperatures[${i}].ReadingCelsius`)));
    const fans = entryFor(bmcUrl(bmc, "/Thermal", "Fans[0].Reading"));
    const power = [0, 1].map((i) => entryFor(bmcUrl(bmc, "/Power", `PowerSupplies[${i}].LastPowerOutputWatts`)));
    const entries = [...thermal, fans, ...power, entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerConsumedWatts"))];
    assert.equal(new Set(entries.map((e) => redfish.groupKey(e))).size, 1, "one group per BMC");
    await withSource(
      entries,
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      async (poll) => {
        for (let cycle = 1; cycle <= 3; cycle++) {
          const result = await poll();
          assert.equal(result.readings.length, entries.length);
          assert.equal(bmc.requests.get(`${CHASSIS}/Thermal`), cycle);
          assert.equal(bmc.requests.get(`${CHASSIS}/Power`), cycle);
        }
      },
    );
    assert.ok(bmc.connections() <= 2, `${bmc.connections()} connections for 6 requests`);
  });
});

Deno.test("https source fails the whole group on a wrong password without showing it", async () => {
  await withBmc(async (bmc) => {
    const wrong = "Wr0ng-Passw0rd!";
    const entries = [
      entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius", { password: wrong })),
      entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerConsumedWatts", { password: wrong })),
    ];
    assert.ok(!redfish.endpoint(entries[0]!).includes(wrong));
    await withSource(
      entries,
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      async (poll) => {
        await assert.rejects(poll(), (err: Error) => {
          assert.match(err.message, /answered HTTP 401/);
          assert.match(err.message, /refused the user name or password/);
          assert.match(err.message, /and 1 more documents of this BMC failed/);
          assert.ok(!err.message.includes(wrong), err.message);
          assert.ok(!err.message.includes(btoa(`admin:${wrong}`)), err.message);
          return true;
        });
      },
    );
  });
});

Deno.test("https source reports a missing path or a null reading for that entry alone", async () => {
  await withBmc(async (bmc) => {
    const good = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[1].ReadingCelsius"));
    const missing = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingKelvin"));
    const absent = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[2].ReadingCelsius"));
    const object = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].Status"));
    const result = await withSource(
      [good, missing, absent, object],
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      (poll) => poll(),
    );
    assert.equal(valueOf(result, good), 40.5);
    const message = (e: MetricEntry) => result.errors.find((x) => x.entry === e)?.message ?? "";
    assert.match(
      message(missing),
      /No key 'ReadingKelvin' in 'Temperatures\[0\]' in https:\/\/127\.0\.0\.1:\d+\/redfish/,
    );
    assert.match(message(absent), /'Temperatures\[2\]\.ReadingCelsius' in .* is null, not a reading/);
    assert.match(message(object), /is an object, not a reading/);
  });
});

Deno.test("https source fails the entries of a missing or non-JSON document and still reads the others", async () => {
  await withBmc(async (bmc) => {
    const good = entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerConsumedWatts"));
    const missingDoc = entryFor(bmcUrl(bmc, "/Storage", "Drives[0].CapacityBytes"));
    const html = entryFor(`https://${bmc.user}:${bmc.password}@127.0.0.1:${bmc.port}/#Temperatures[0]`);
    const result = await withSource(
      [good, missingDoc, html],
      configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" }),
      (poll) => poll(),
    );
    assert.equal(valueOf(result, good), 187);
    const message = (e: MetricEntry) => result.errors.find((x) => x.entry === e)?.message ?? "";
    assert.match(
      message(missingDoc),
      /GET https:\/\/127\.0\.0\.1:\d+\/redfish\/v1\/Chassis\/1\/Storage answered HTTP 404/,
    );
    assert.match(message(html), /did not answer JSON \(content-type 'text\/html'\)/);
  });
});

Deno.test("https source stops a request on a kept-alive connection when the poll is aborted", async () => {
  await withBmc(async (bmc) => {
    const entry = entryFor(bmcUrl(bmc, "/Thermal", "Temperatures[0].ReadingCelsius"));
    const config = configWith({ redfish_ca_file: bmc.certFile, redfish_tls_verify: "full" });
    const source = redfish.create([entry], { options: config, timeoutMs: 3000 });
    try {
      await source.poll([entry], AbortSignal.timeout(3000)); // opens the kept-alive connection
      bmc.delays.set(`${CHASSIS}/Thermal`, 5000);
      const started = performance.now();
      await assert.rejects(source.poll([entry], AbortSignal.timeout(300)));
      assert.ok(performance.now() - started < 2000, "the poll waited for the slow BMC");
    } finally {
      await source.close();
    }
  });
});

Deno.test("http source reads JSON over plain HTTP with basic authentication", async () => {
  await withBmc(async (bmc) => {
    const entry = entryFor(bmcUrl(bmc, "/Power", "PowerControl[0].PowerConsumedWatts", { scheme: "http" }));
    const result = await withSource([entry], testConfig(), (poll) => poll());
    assert.equal(valueOf(result, entry), 187);
    assert.equal(redfish.groupKey(entry).startsWith("http://"), true);
  }, { tls: false });
});

Deno.test("https source validation rejects a missing or multi-valued JSON path and an unreadable CA file", () => {
  const base = "https://admin:pw@bmc.example/redfish/v1/Chassis/1/Thermal";
  const config = testConfig();
  assert.match(redfish.validate(entryFor(base), config) ?? "", /Missing JSON path after '#'/);
  assert.match(redfish.validate(entryFor(`${base}#Temperatures[*].ReadingCelsius`), config) ?? "", /several values/);
  assert.match(
    redfish.validate(
      entryFor(`${base}#Temperatures[0]`),
      configWith({ redfish_ca_file: "/nonexistent/bmc.pem", redfish_tls_verify: "full" }),
    ) ?? "",
    /Cannot open redfish_ca_file '\/nonexistent\/bmc.pem'/,
  );
  assert.match(
    redfish.validate(entryFor(`${base}#Temperatures[0]`), configWith({ redfish_ca_file: "/etc/bmc.pem" })) ?? "",
    /redfish_ca_file '\/etc\/bmc.pem' is not used under redfish_tls_verify 'tofu': set redfish_tls_verify to 'full' or 'ca'/,
  );
  assert.equal(redfish.validate(entryFor(`${base}#Temperatures[0].ReadingCelsius`), config), undefined);
  assert.equal(redfish.endpoint(entryFor(`${base}#T`)), "admin@bmc.example:443");
  assert.equal(
    redfish.groupKey(entryFor(`${base}#T`)),
    redfish.groupKey(entryFor("https://admin:pw@bmc.example:443/redfish/v1/Chassis/1/Power#P")),
  );
});
