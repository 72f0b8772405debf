/**
 * What a BMC can make the collector hold: a document larger than redfish_max_body_bytes (sent
 * chunked), a gzip bomb, JSON nested a million levels. Each fails its own document with the
 * error an operator sees; the other documents of the poll are read.
 */
import assert from "node:assert/strict";
import zlib from "node:zlib";
import type { Config } from "../../../src/config/defaults.ts";
import { redfish } from "../../../src/sources/redfish/redfish.ts";
import type { PollResult } from "../../../src/sources/source.ts";
import { MAX_JSON_DEPTH } from "../../../src/sources/redfish/json_body.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { type FakeBmc, startFakeBmc } from "../../../scripts/peers/redfish_server.ts";

const CHASSIS = "/redfish/v1/Chassis/1";

async function pollBoth(bmc: FakeBmc, config: Config): Promise<{ result: PollResult; hostile: string }> {
  const url = (doc: string, path: string) =>
    `https://${bmc.user}:${bmc.password}@127.0.0.1:${bmc.port}${CHASSIS}${doc}#${path}`;
  const hostile = entryFor(url("/Thermal", "Temperatures[0].ReadingCelsius"), { name: "hostile" });
  const good = entryFor(url("/Power", "PowerControl[0].PowerConsumedWatts"), { name: "good" });
  const source = redfish.create([hostile, good], { options: config, timeoutMs: 10_000 });
  try {
    const result = await source.poll([hostile, good], AbortSignal.timeout(10_000));
    assert.equal(result.readings.length, 1, "the other document was not read");
    assert.equal(result.readings[0]!.value, 187);
    assert.equal(result.errors.length, 1);
    assert.equal(result.errors[0]!.entry, hostile);
    return { result, hostile: result.errors[0]!.message };
  } finally {
    await source.close();
  }
}

async function withBmc(fn: (bmc: FakeBmc) => Promise<void>): Promise<void> {
  const bmc = await startFakeBmc();
  try {
    await fn(bmc);
  } finally {
    await bmc.close();
  }
}

function stream(chunks: number, chunk: Uint8Array, head = new Uint8Array()): ReadableStream<Uint8Array> {
  let sent = -1;
  return new ReadableStream({
    pull(controller) {
      if (sent === chunks) return controller.close();
      controller.enqueue(sent++ < 0 ? head : chunk);
    },
  });
}

const json = { "content-type": "application/json" };

Deno.test("https source refuses a chunked document beyond redfish_max_body_bytes and reads the BMC's others", async () => {
  await withBmc(async (bmc) => {
    const pad = new TextEncoder().encode(`{"pad": "${"x".repeat(65_000)}"},`);
    // 3 MB in 64 KB chunks, without a content-length: the limit is counted on the stream.
    bmc.answers.set(
      `${CHASSIS}/Thermal`,
      () => new Response(stream(48, pad, new TextEncoder().encode("[")), { headers: json }),
    );
    const { hostile } = await pollBoth(bmc, { ...testConfig(), redfish_max_body_bytes: 1_048_576 });
    assert.equal(
      hostile,
      `GET https://127.0.0.1:${bmc.port}${CHASSIS}/Thermal sent more than 1048576 bytes (redfish_max_body_bytes): ` +
        `document refused`,
    );
  });
});

Deno.test("https source refuses a document whose Content-Length is beyond redfish_max_body_bytes before reading it", async () => {
  await withBmc(async (bmc) => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // 64 KB at a time, slowly: a body read to the limit would take seconds.
        pulled++;
        return new Promise((resolve) => setTimeout(resolve, 50)).then(() =>
          controller.enqueue(new Uint8Array(65_536).fill(0x20))
        );
      },
    });
    bmc.answers.set(
      `${CHASSIS}/Thermal`,
      () => new Response(body, { headers: { ...json, "content-length": String(16_000_000) } }),
    );
    const { hostile } = await pollBoth(bmc, { ...testConfig(), redfish_max_body_bytes: 1_048_576 });
    assert.equal(
      hostile,
      `GET https://127.0.0.1:${bmc.port}${CHASSIS}/Thermal announced 16000000 bytes, more than 1048576 ` +
        `(redfish_max_body_bytes): document refused`,
    );
    assert.ok(pulled < 16, `${pulled} chunks of 64 KB were produced: the body was read`);
  });
});

Deno.test("https source lets go of an error answer without reading its endless body", async () => {
  await withBmc(async (bmc) => {
    let released!: () => void;
    const gone = new Promise<void>((resolve) => released = resolve);
    const body = new ReadableStream<Uint8Array>({
      pull: (controller) => {
        controller.enqueue(new Uint8Array(65_536).fill(0x20));
        return new Promise((resolve) => setTimeout(resolve, 5));
      },
      cancel: () => released(),
    });
    bmc.answers.set(`${CHASSIS}/Thermal`, () => new Response(body, { status: 500, headers: json }));
    const entry = entryFor(
      `https://${bmc.user}:${bmc.password}@127.0.0.1:${bmc.port}${CHASSIS}/Thermal#Temperatures[0].ReadingCelsius`,
    );
    const source = redfish.create([entry], { options: testConfig(), timeoutMs: 10_000 });
    try {
      await assert.rejects(source.poll([entry], AbortSignal.timeout(10_000)), /answered HTTP 500/);
      // The source is still open: only letting go of the answer ends the body.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stillRead = new Promise<string>((resolve) => timer = setTimeout(() => resolve("still read"), 10_000));
      assert.equal(await Promise.race([gone.then(() => "released"), stillRead]), "released");
      clearTimeout(timer);
    } finally {
      await source.close();
    }
  });
});

Deno.test("https source stops a gzip bomb at the limit of decompressed bytes", async () => {
  await withBmc(async (bmc) => {
    // 64 MiB of JSON whitespace compressed to about 64 KB.
    const bomb = new Uint8Array(zlib.gzipSync(new Uint8Array(64 * 1024 * 1024).fill(0x20)));
    assert.ok(bomb.length < 200_000);
    bmc.answers.set(
      `${CHASSIS}/Thermal`,
      () => new Response(bomb, { headers: { ...json, "content-encoding": "gzip" } }),
    );
    const { hostile } = await pollBoth(bmc, testConfig());
    assert.equal(
      hostile,
      `GET https://127.0.0.1:${bmc.port}${CHASSIS}/Thermal sent more than 4194304 bytes after decompression ` +
        `(redfish_max_body_bytes): document refused`,
    );
  });
});

Deno.test("https source reads a gzip-compressed document", async () => {
  await withBmc(async (bmc) => {
    const doc = new Uint8Array(
      zlib.gzipSync(new TextEncoder().encode(JSON.stringify(bmc.documents.get(`${CHASSIS}/Thermal`)))),
    );
    bmc.answers.set(
      `${CHASSIS}/Thermal`,
      () => new Response(doc, { headers: { ...json, "content-encoding": "gzip" } }),
    );
    const entry = entryFor(
      `https://${bmc.user}:${bmc.password}@127.0.0.1:${bmc.port}${CHASSIS}/Thermal#Temperatures[1].ReadingCelsius`,
    );
    const source = redfish.create([entry], { options: testConfig(), timeoutMs: 3000 });
    try {
      const result = await source.poll([entry], AbortSignal.timeout(3000));
      assert.deepEqual(result.errors, []);
      assert.equal(result.readings[0]!.value, 40.5);
    } finally {
      await source.close();
    }
  });
});

Deno.test("https source refuses JSON nested a million levels without parsing it", async () => {
  await withBmc(async (bmc) => {
    const open = new Uint8Array(100_000).fill(0x5b);
    bmc.answers.set(`${CHASSIS}/Thermal`, () => new Response(stream(10, open), { headers: json }));
    const { hostile } = await pollBoth(bmc, testConfig());
    assert.equal(
      hostile,
      `GET https://127.0.0.1:${bmc.port}${CHASSIS}/Thermal sent JSON nested deeper than ${MAX_JSON_DEPTH} levels: ` +
        `document refused`,
    );
  });
});

Deno.test("https source refuses a content-encoding it cannot decode, naming it", async () => {
  await withBmc(async (bmc) => {
    bmc.answers.set(
      `${CHASSIS}/Thermal`,
      () => new Response("{}", { headers: { ...json, "content-encoding": "zstd" } }),
    );
    const { hostile } = await pollBoth(bmc, testConfig());
    assert.match(hostile, /sent content-encoding 'zstd', which is not supported \(gzip, deflate\)/);
  });
});
