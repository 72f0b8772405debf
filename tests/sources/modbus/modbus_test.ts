import assert from "node:assert/strict";
import { MAX_REGISTERS_PER_READ, modbus, modbusRtu, planReads } from "../../../src/sources/modbus/modbus.ts";
import { decodeRegisters, parseModbusType } from "../../../src/sources/modbus/register_types.ts";
import type { PollResult, Protocol } from "../../../src/sources/source.ts";
import type { MetricEntry } from "../../../src/config/metrics_dir.ts";
import { entryFor } from "../../../scripts/harness/entries.ts";
import { testConfig } from "../../../scripts/harness/config.ts";
import { freePort } from "../../../scripts/peers/postgres.ts";
import { startPymodbus, type TypedValue } from "../../../scripts/peers/pymodbus.ts";
import { conformance } from "../conformance.ts";

const config = testConfig();
const ctx = { options: config, timeoutMs: 1000 };
const SIZE = 1000;

/** A distinctive value of every kind, with every byte different so that any mix-up shows. */
const SAMPLES: Record<string, number | bigint> = {
  u16: 0xabcd,
  i16: -12345,
  u32: 0x89abcdef,
  i32: -123456789,
  f32: -273.15,
  u64: 0xfedcba9876543210n,
  i64: -1234567890123456789n,
  f64: 6.02214076e23,
};

/** Every supported type name: 16-bit kinds with a byte order, the others with both orders. */
const TYPES = Object.keys(SAMPLES).flatMap((kind) =>
  kind.endsWith("16") ? [`be_${kind}`, `le_${kind}`] : ["be_be", "be_le", "le_be", "le_le"].map((o) => `${o}_${kind}`)
);

function expected(type: string): number | bigint {
  const kind = type.slice(-3);
  const v = SAMPLES[kind]!;
  return kind === "f32" ? Math.fround(v as number) : v;
}

/** Every type in the holding table from register 100 on (4 registers apart: one coalesced read). */
const HOLDING: TypedValue[] = TYPES.map((type, i) => ({
  table: "holding",
  address: 100 + 4 * i,
  type,
  value: SAMPLES[type.slice(-3)]!,
}));
/** The same in the input table from 500 on, 8 apart, to tell the tables apart. */
const INPUT: TypedValue[] = TYPES.map((type, i) => ({
  table: "input",
  address: 500 + 8 * i,
  type,
  value: SAMPLES[type.slice(-3)]!,
}));

function entriesOf(scheme: string, port: number, values: TypedValue[], unit = 1): MetricEntry[] {
  return values.map((v, i) =>
    entryFor(
      `${scheme}://127.0.0.1:${port}/${unit}/${v.address}/${v.type}${v.table === "input" ? "?table=input" : ""}`,
      { name: `${v.table}_${v.type}`, line: i + 1 },
    )
  );
}

function valueOf(result: PollResult, entry: MetricEntry): unknown {
  const r = result.readings.find((x) => x.entry === entry);
  assert.ok(r, `no reading for ${entry.url}: ${JSON.stringify(result.errors.map((e) => e.message))}`);
  return r.value;
}

async function withSource<T>(
  protocol: Protocol,
  entries: MetricEntry[],
  fn: (poll: () => Promise<PollResult>) => Promise<T>,
) {
  const source = protocol.create(entries, ctx);
  try {
    return await fn(() => source.poll(entries, AbortSignal.timeout(5000)));
  } finally {
    await source.close();
  }
}

for (const [name, protocol, scheme] of [["modbus", modbus, "modbus"], ["modbusrtu", modbusRtu, "modbusrtu"]] as const) {
  conformance(name, protocol, async () => {
    const server = await startPymodbus({ values: HOLDING.slice(0, 6), size: SIZE, tcpPorts: 1, rtuPorts: 1 });
    const port = scheme === "modbus" ? server.tcpPorts[0]! : server.rtuPorts[0]!;
    return {
      fixture: {
        entries: entriesOf(scheme, port, HOLDING.slice(0, 6)),
        unknownEntry: entryFor(`${scheme}://127.0.0.1:${port}/1/${SIZE + 10}/be_u16`, { name: "past_the_end" }),
        deadEntries: [entryFor(`${scheme}://127.0.0.1:${freePort()}/1/0/be_u16`)],
      },
      teardown: server.stop,
    };
  });
}

Deno.test("modbus source decodes every type in every byte and word order, from holding and input registers", async () => {
  const server = await startPymodbus({ values: [...HOLDING, ...INPUT], size: SIZE, rtuPorts: 1 });
  try {
    for (
      const [protocol, scheme, port] of [
        [modbus, "modbus", server.tcpPorts[0]!],
        [modbusRtu, "modbusrtu", server.rtuPorts[0]!],
      ] as const
    ) {
      const entries = entriesOf(scheme, port, [...HOLDING, ...INPUT]);
      await withSource(protocol, entries, async (poll) => {
        const result = await poll();
        assert.deepEqual(result.errors, []);
        for (const e of entries) {
          const type = e.target.path.split("/")[2]!;
          assert.equal(valueOf(result, e), expected(type), `${scheme} ${e.name}`);
        }
      });
    }
  } finally {
    await server.stop();
  }
});

Deno.test("modbus source reads the unit id that the URL names, in reads of at most 125 registers", async () => {
  // 300 consecutive registers holding their address (unit 1) or 1000 + their address (unit 7).
  const raw = [1, 7].map((unit) => ({
    unit,
    table: "holding" as const,
    address: 0,
    registers: Array.from({ length: 300 }, (_, i) => (unit === 7 ? 1000 : 0) + i),
  }));
  const server = await startPymodbus({ raw, units: [1, 7], size: SIZE });
  try {
    const unitOf = (i: number) => (i % 3 === 0 ? 7 : 1);
    const entries = Array.from(
      { length: 300 },
      (_, i) => entryFor(`modbus://127.0.0.1:${server.tcpPorts[0]}/${unitOf(i)}/${i}/be_u16`, { line: i + 1 }),
    );
    await withSource(modbus, entries, async (poll) => {
      const result = await poll();
      assert.deepEqual(result.errors, []);
      entries.forEach((e, i) => assert.equal(valueOf(result, e), (unitOf(i) === 7 ? 1000 : 0) + i));
    });
  } finally {
    await server.stop();
  }
});

Deno.test("modbus source fails only the entry at an illegal address, even inside a coalesced read", async () => {
  const raw = [{ table: "holding" as const, address: SIZE - 4, registers: [11, 22, 33, 44] }];
  const server = await startPymodbus({ raw, size: SIZE });
  try {
    const port = server.tcpPorts[0]!;
    const a = entryFor(`modbus://127.0.0.1:${port}/1/${SIZE - 4}/be_u16`, { name: "a" });
    const b = entryFor(`modbus://127.0.0.1:${port}/1/${SIZE - 3}/be_u16`, { name: "b" });
    // Two registers from SIZE - 1: the second does not exist, so the whole range would fail.
    const bad = entryFor(`modbus://127.0.0.1:${port}/1/${SIZE - 1}/be_be_u32`, { name: "bad" });
    const c = entryFor(`modbus://127.0.0.1:${port}/1/${SIZE - 2}/be_u16`, { name: "c" });
    await withSource(modbus, [a, b, bad, c], async (poll) => {
      for (const round of [1, 2]) {
        const result = await poll();
        assert.equal(result.errors.length, 1, `round ${round}`);
        assert.equal(result.errors[0]!.entry, bad);
        assert.match(
          result.errors[0]!.message,
          /exception 2: Illegal data address.*holding registers 999\.\.1000 of unit 1/,
        );
        assert.deepEqual([a, b, c].map((e) => valueOf(result, e)), [11, 22, 33]);
      }
    });
  } finally {
    await server.stop();
  }
});

Deno.test("modbus source reconnects on a later poll after the server was killed and restarted", async () => {
  const values: TypedValue[] = [{ table: "holding", address: 10, type: "be_be_f32", value: 3.5 }];
  const server = await startPymodbus({ values, size: SIZE });
  const entries = entriesOf("modbus", server.tcpPorts[0]!, values);
  try {
    await withSource(modbus, entries, async (poll) => {
      assert.equal(valueOf(await poll(), entries[0]!), 3.5);
      await server.kill();
      await assert.rejects(poll(), /modbus:\/\/127\.0\.0\.1:\d+/);
      await server.restart();
      assert.equal(valueOf(await poll(), entries[0]!), 3.5);
    });
  } finally {
    await server.stop();
  }
});

Deno.test("modbus source gives up on a silent device within its timeout and opens a new connection next poll", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn); // never answers
  })();
  const entries = [entryFor(`modbus://127.0.0.1:${listener.addr.port}/1/0/be_u16`)];
  const source = modbus.create(entries, ctx);
  try {
    for (const round of [1, 2]) {
      const started = performance.now();
      await assert.rejects(source.poll(entries, AbortSignal.timeout(5000)), /Timed out/);
      const took = performance.now() - started;
      assert.ok(took >= ctx.timeoutMs - 50 && took < ctx.timeoutMs + 1000, `round ${round} took ${took} ms`);
      assert.equal(accepted.length, round, "a timed-out connection must not be reused");
    }
  } finally {
    await source.close();
    listener.close();
    for (const c of accepted) c.close();
    await accepting.catch(() => {});
  }
});

Deno.test("modbus source stops a poll at once when its signal aborts", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  const entries = [entryFor(`modbus://127.0.0.1:${listener.addr.port}/1/0/be_u16`)];
  const source = modbus.create(entries, { options: config, timeoutMs: 5000 });
  try {
    const started = performance.now();
    await assert.rejects(source.poll(entries, AbortSignal.timeout(200)));
    assert.ok(performance.now() - started < 1000);
  } finally {
    await source.close();
    listener.close();
    for (const c of accepted) c.close();
    await accepting.catch(() => {});
  }
});

Deno.test("modbus urls are validated before any network access", () => {
  const cases: [string, RegExp][] = [
    ["modbus://h/1/1032/le_le_f32", /^$/],
    ["modbus://h:1502/0/0/be_u16?table=input", /^$/],
    ["modbusrtu://gw:4001/17/3/be_le_i32", /^$/],
    ["modbus://h/1/1032", /Expected <unit>\/<register>\/<type>/],
    ["modbus://h/256/1/be_u16", /Invalid unit id '256'/],
    ["modbus://h/1/x1/be_u16", /Invalid register 'x1'/],
    ["modbus://h/1/65535/be_be_u32", /runs past address 65535/],
    ["modbus://h/1/1/le_le_f16", /Unknown Modbus type 'le_le_f16'/],
    ["modbus://h/1/1/be_be_u16", /a 16-bit kind takes a byte order only/],
    ["modbus://h/1/1/le_f32", /takes a byte and a word order/],
    ["modbus://h/1/1/xe_le_f32", /orders are 'be' or 'le'/],
    ["modbus://h/1/1/be_u16?table=coils", /Invalid table 'coils'/],
    ["modbus://h/1/1/be_u16?unit=2", /Unknown query parameter 'unit'/],
    ["modbus://user:pw@h/1/1/be_u16", /Modbus has no credentials/],
    ["modbusrtu://gw/1/1/be_u16", /Missing gateway port/],
  ];
  for (const [url, re] of cases) {
    const protocol = url.startsWith("modbusrtu") ? modbusRtu : modbus;
    assert.match(protocol.validate(entryFor(url), config) ?? "", re, url);
  }
});

Deno.test("modbus groups entries by host, port and framing, whatever their unit", () => {
  const key = (url: string) => (url.startsWith("modbusrtu") ? modbusRtu : modbus).groupKey(entryFor(url));
  assert.equal(key("modbus://h/1/0/be_u16"), key("modbus://h:502/2/9/be_u16?table=input"));
  assert.notEqual(key("modbus://h/1/0/be_u16"), key("modbus://h:503/1/0/be_u16"));
  assert.notEqual(key("modbus://h:502/1/0/be_u16"), key("modbusrtu://h:502/1/0/be_u16"));
  assert.equal(modbus.endpoint(entryFor("modbus://h/1/0/be_u16")), "h:502");
});

Deno.test("modbus reads are coalesced per unit and table, up to 125 registers, never across gaps", () => {
  const item = (unit: number, register: number, type: string, table: "holding" | "input" = "holding") => {
    const t = parseModbusType(type);
    if ("error" in t) throw new Error(t.error);
    return { entry: entryFor(`modbus://h/${unit}/${register}/${type}`), address: { unit, table, register, type: t } };
  };
  const items = [
    item(1, 10, "be_be_f32"),
    item(1, 12, "be_u16"),
    item(1, 11, "be_u16"), // overlaps the f32
    item(1, 14, "be_u16"), // a gap at 13
    item(2, 13, "be_u16"),
    item(1, 13, "be_u16", "input"),
    // 125 consecutive registers fill one read; the next one starts another.
    ...Array.from({ length: MAX_REGISTERS_PER_READ }, (_, i) => item(1, 200 + i, "be_u16")),
    item(1, 200 + MAX_REGISTERS_PER_READ, "be_be_u32"),
    item(1, 500, "be_u16"),
    item(1, 501, "be_u16"),
  ];
  const blocks = planReads(items, (i) => i.address.register === 501);
  const shape = blocks.map((b) => `${b.unit}/${b.table}/${b.start}+${b.count}:${b.items.length}`);
  assert.deepEqual(
    shape.sort(),
    [
      "1/holding/10+3:3",
      "1/holding/14+1:1",
      "1/holding/200+125:125",
      "1/holding/325+2:1",
      "1/holding/500+1:1",
      "1/holding/501+1:1",
      "1/input/13+1:1",
      "2/holding/13+1:1",
    ].sort(),
  );
});

Deno.test("modbus types decode the byte and word orders as documented", () => {
  const decode = (name: string, regs: number[]) => {
    const t = parseModbusType(name);
    if ("error" in t) throw new Error(t.error);
    return decodeRegisters(t, regs);
  };
  // 0x11223344: be_be = [0x1122, 0x3344], be_le = [0x3344, 0x1122], le_be = [0x2211, 0x4433], le_le = [0x4433, 0x2211]
  assert.equal(decode("be_be_u32", [0x1122, 0x3344]), 0x11223344);
  assert.equal(decode("be_le_u32", [0x3344, 0x1122]), 0x11223344);
  assert.equal(decode("le_be_u32", [0x2211, 0x4433]), 0x11223344);
  assert.equal(decode("le_le_u32", [0x4433, 0x2211]), 0x11223344);
  assert.equal(decode("le_u16", [0x3412]), 0x1234);
  assert.equal(decode("be_i16", [0xffff]), -1);
  assert.equal(decode("be_le_u64", [0x7788, 0x5566, 0x3344, 0x1122]), 0x1122334455667788n);
  assert.ok(Number.isNaN(decode("be_be_f32", [0x7fc0, 0x0000])));
  assert.throws(() => decode("be_be_f32", [1]), /needs 2 registers, got 1/);
});
