/**
 * A real Modbus server for tests: Debian's python3-pymodbus (3.0.0rc1 API, run by /usr/bin/python3,
 * see peers.md §3) serving one datastore on 127.0.0.1, on any number of Modbus TCP ports and of
 * "RTU over TCP" ports (RTU frames with CRC on a raw socket, as a serial gateway passes them).
 *
 * The test gives typed values (`le_le_f32` ...); the server script encodes them into registers
 * with Python's struct, following the definition in src/sources/modbus/register_types.ts, and refuses to
 * start unless pymodbus's own BinaryPayloadDecoder, given the same byte and word order, decodes
 * every value back. The server answers any unit id (or only `units`, each with its own registers)
 * and refuses addresses past `size` (exception 2, illegal data address).
 */
import { freePort } from "./postgres.ts";

export type ModbusTable = "holding" | "input";

export interface TypedValue {
  /** Only this unit holds the value (when `units` is given); default: every unit. */
  unit?: number;
  table: ModbusTable;
  address: number;
  /** A type name of register_types.ts, e.g. `be_le_f32`. */
  type: string;
  value: number | bigint;
}

export interface PymodbusOptions {
  values?: TypedValue[];
  /** Registers written as they are. */
  raw?: { unit?: number; table: ModbusTable; address: number; registers: number[] }[];
  /** Unit ids served, each with its own registers; default: one datastore answering every id. */
  units?: number[];
  /** Registers per table; reading at or past it is an illegal address. Default 1000. */
  size?: number;
  /** Number of Modbus TCP ports to serve (default 1). */
  tcpPorts?: number;
  /** Number of RTU-over-TCP ports to serve (default 0). */
  rtuPorts?: number;
}

export interface PymodbusServer {
  tcpPorts: number[];
  rtuPorts: number[];
  pid(): number;
  /** Kills the server (SIGKILL, like a crash) and waits until it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same ports with the same registers. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const PYTHON = "/usr/bin/python3";

const SERVER_PY = String.raw`
import asyncio, json, math, struct, sys
from pymodbus.server.async_io import ModbusTcpServer
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
from pymodbus.framer.socket_framer import ModbusSocketFramer
from pymodbus.framer.rtu_framer import ModbusRtuFramer
from pymodbus.payload import BinaryPayloadDecoder
from pymodbus.constants import Endian

FORMATS = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f", "u64": "Q", "i64": "q", "f64": "d"}
DECODERS = {"u16": "decode_16bit_uint", "i16": "decode_16bit_int", "u32": "decode_32bit_uint",
            "i32": "decode_32bit_int", "f32": "decode_32bit_float", "u64": "decode_64bit_uint",
            "i64": "decode_64bit_int", "f64": "decode_64bit_float"}

def encode(type_name, text):
    parts = type_name.split("_")
    kind = parts[-1]
    byte_order = parts[0]
    word_order = parts[1] if len(parts) == 3 else "be"
    fmt = ">" + FORMATS[kind]
    value = float(text) if kind.startswith("f") else int(text)
    raw = struct.pack(fmt, value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "le":
        words.reverse()
    if byte_order == "le":
        words = [w[::-1] for w in words]
    registers = [int.from_bytes(w, "big") for w in words]
    expected = struct.unpack(fmt, raw)[0]
    decoder = BinaryPayloadDecoder.fromRegisters(
        registers,
        byteorder=Endian.Little if byte_order == "le" else Endian.Big,
        wordorder=Endian.Little if word_order == "le" else Endian.Big)
    got = getattr(decoder, DECODERS[kind])()
    same = got == expected or (isinstance(got, float) and math.isnan(got) and math.isnan(expected))
    if not same:
        sys.exit(f"pymodbus decodes {registers} as {type_name} to {got!r}, expected {expected!r}")
    return registers

spec = json.load(open(sys.argv[1]))
size = spec["size"]

def datastore(unit):
    tables = {"holding": [0] * size, "input": [0] * size}
    for v in spec["values"]:
        if v.get("unit") in (None, unit):
            regs = encode(v["type"], v["value"])
            tables[v["table"]][v["address"]:v["address"] + len(regs)] = regs
    for r in spec["raw"]:
        if r.get("unit") in (None, unit):
            tables[r["table"]][r["address"]:r["address"] + len(r["registers"])] = r["registers"]
    return ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, [0] * 8), co=ModbusSequentialDataBlock(0, [0] * 8),
        hr=ModbusSequentialDataBlock(0, tables["holding"][:size]),
        ir=ModbusSequentialDataBlock(0, tables["input"][:size]),
        zero_mode=True)

async def main():
    if spec["units"] is None:
        context = ModbusServerContext(slaves=datastore(None), single=True)
    else:
        context = ModbusServerContext(slaves={u: datastore(u) for u in spec["units"]}, single=False)
    # allow_reuse_address: a restarted server binds again although the killed one left TIME_WAITs.
    servers = [ModbusTcpServer(context, framer, None, ("127.0.0.1", p), allow_reuse_address=True)
               for framer, ports in ((ModbusSocketFramer, spec["tcp_ports"]), (ModbusRtuFramer, spec["rtu_ports"]))
               for p in ports]
    await asyncio.gather(*(s.serve_forever() for s in servers))

asyncio.run(main())
`;

export async function startPymodbus(opts: PymodbusOptions = {}): Promise<PymodbusServer> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-pymodbus-" });
  // freePort() may hand out a port it just released again: draw until every port is distinct.
  const ports = new Set<number>();
  while (ports.size < (opts.tcpPorts ?? 1) + (opts.rtuPorts ?? 0)) ports.add(freePort());
  const tcpPorts = [...ports].slice(0, opts.tcpPorts ?? 1);
  const rtuPorts = [...ports].slice(opts.tcpPorts ?? 1);
  const spec = {
    size: opts.size ?? 1000,
    // Values go as text so that 64-bit integers reach Python exactly.
    values: (opts.values ?? []).map((v) => ({ ...v, value: String(v.value) })),
    raw: opts.raw ?? [],
    units: opts.units ?? null,
    tcp_ports: tcpPorts,
    rtu_ports: rtuPorts,
  };
  await Deno.writeTextFile(`${dir}/server.py`, SERVER_PY);
  await Deno.writeTextFile(`${dir}/spec.json`, JSON.stringify(spec));
  let child: Deno.ChildProcess | undefined;

  const start = async () => {
    const proc = new Deno.Command(PYTHON, {
      args: [`${dir}/server.py`, `${dir}/spec.json`],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    child = proc;
    // pymodbus logs every dropped client at ERROR: drain stderr, keep the start for diagnostics.
    const stderr = collect(proc.stderr);
    const exited = proc.status.then(() => true);
    const deadline = Date.now() + 15_000;
    for (const port of [...tcpPorts, ...rtuPorts]) {
      while (!(await listening(port))) {
        if (await Promise.race([exited, delay(50).then(() => false)])) {
          throw new Error(`pymodbus server exited before listening on ${port}: ${(await stderr).slice(0, 2000)}`);
        }
        if (Date.now() > deadline) {
          await kill();
          throw new Error(`pymodbus server not listening on ${port} after 15 s`);
        }
      }
    }
  };
  const kill = async () => {
    if (!child) return;
    const c = child;
    child = undefined;
    try {
      c.kill("SIGKILL");
    } catch { /* already gone */ }
    await c.status;
  };
  try {
    await start();
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  return {
    tcpPorts,
    rtuPorts,
    pid: () => child?.pid ?? -1,
    kill,
    restart: start,
    async stop() {
      await kill();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function listening(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) if (text.length < 8192) text += decoder.decode(chunk, { stream: true });
  return text;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
