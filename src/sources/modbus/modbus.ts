import { redactUrl } from "../../config/metric_url.ts";
import type ModbusMod from "modbus-serial";
import type { MetricEntry } from "../../config/metrics_dir.ts";
import { decodeRegisters, type ModbusType, parseModbusType } from "./register_types.ts";
import type { EntryError, PollResult, Protocol, Reading, Source, SourceContext } from "../source.ts";

/**
 * Modbus devices, read with npm:modbus-serial:
 *
 *   modbus://host[:port]/<unit>/<register>/<type>[?table=input]       Modbus TCP, port 502 by default
 *   modbusrtu://host:port/<unit>/<register>/<type>[?table=input]      RTU frames over TCP, port required
 *
 * - `unit`: the unit (slave) id, 0..255; a Modbus TCP device usually answers 1 or any id, a gateway
 *   forwards the id to the serial device it names.
 * - `register`: the register address as sent in the request, 0..65535 (0-based: holding register
 *   40001 or input register 30001 in Modicon numbering is address 0).
 * - `type`: see register_types.ts (`le_le_f32`, `be_be_u32`, `be_u16`, ...).
 * - `table`: `holding` (the default, function 3) or `input` (input registers, function 4).
 *
 * `modbusrtu` is for serial-to-Ethernet gateways in "RTU over TCP" (transparent) mode, which
 * pass the serial frames (unit id, PDU, CRC) through a raw TCP socket with no MBAP header. It uses
 * modbus-serial's `connectTelnet` port, which sends exactly that; `connectTcpRTUBuffered`, despite
 * its name, sends MBAP-framed requests and gets no answer from such a gateway. An RTU link has no
 * transaction id, so every request waits for the previous answer, and after a timeout the socket
 * is reopened so that a late answer can never be taken for the next one.
 *
 * One persistent connection per group (host, port, framing), opened on the first poll and
 * reopened on the poll after any failure. Per poll, the entries of one unit and table are sorted
 * by register and overlapping or adjacent ranges are read by one request of at most 125 registers
 * (gaps are not read: a register between two entries may not exist on the device). Requests are
 * sent one after another: many devices and every RTU gateway handle one at a time.
 *
 * A Modbus exception (illegal address, gateway target not responding, ...) fails the entries of
 * that request only. When a coalesced request gets one, its entries are read one by one so that one
 * bad register affects only itself; such a register is then read alone on later polls (and
 * coalesced again once it reads fine). A connection failure, a closed connection or a timeout
 * fails the whole poll: behind a gateway, a unit that never answers fails the poll of every unit
 * of that gateway, unless the gateway answers for it with exception 11 (target device failed to
 * respond), which fails only that unit's entries.
 */

// modbus-serial's typings say `export default` while the runtime is CommonJS (peers.md §1).
type Client = InstanceType<typeof ModbusMod.default>;

/** modbus-serial, loaded at the first connection: a collector without Modbus entries never loads it. */
async function modbusClient(): Promise<Client> {
  const ModbusRTU = (await import("modbus-serial")).default as unknown as typeof ModbusMod.default;
  return new ModbusRTU();
}

const DEFAULT_PORT = 502;
/** Most registers one read (function 3 or 4) may ask for, by the Modbus specification. */
export const MAX_REGISTERS_PER_READ = 125;

type Table = "holding" | "input";
type Framing = "tcp" | "rtu";

interface RegisterAddress {
  unit: number;
  table: Table;
  register: number;
  type: ModbusType;
}

function parseAddress(entry: MetricEntry): RegisterAddress | { error: string } {
  const where = `url '${redactUrl(entry.url)}'`;
  const parts = entry.target.path.split("/");
  if (parts.length !== 3) {
    return { error: `Expected <unit>/<register>/<type> after the host in ${where}, got '${entry.target.path}'` };
  }
  const [unitText = "", registerText = "", typeText = ""] = parts;
  const unit = wholeNumber(unitText);
  if (unit === undefined || unit > 255) return { error: `Invalid unit id '${unitText}' in ${where}: expected 0..255` };
  const register = wholeNumber(registerText);
  if (register === undefined || register > 65535) {
    return { error: `Invalid register '${registerText}' in ${where}: expected an address 0..65535` };
  }
  const type = parseModbusType(typeText);
  if ("error" in type) return { error: `${type.error} in ${where}` };
  if (register + type.registers - 1 > 65535) {
    return { error: `Register ${register} of type ${type.name} runs past address 65535 in ${where}` };
  }
  let table: Table = "holding";
  for (const [key, value] of entry.target.query) {
    if (key !== "table") return { error: `Unknown query parameter '${key}' in ${where} (only 'table' is known)` };
    if (value !== "holding" && value !== "input") {
      return { error: `Invalid table '${value}' in ${where}: expected 'holding' or 'input'` };
    }
    table = value;
  }
  return { unit, table, register, type };
}

function wholeNumber(text: string): number | undefined {
  return /^\d{1,5}$/.test(text) ? Number(text) : undefined;
}

function makeProtocol(framing: Framing): Protocol<never> {
  const scheme = framing === "tcp" ? "modbus" : "modbusrtu";
  return {
    configKeys: [],
    validate(entry) {
      const t = entry.target;
      if (t.username || t.password) return `Modbus has no credentials: remove them from url '${redactUrl(entry.url)}'`;
      if (framing === "rtu" && t.port === undefined) {
        return `Missing gateway port in url '${
          redactUrl(entry.url)
        }' (expected modbusrtu://host:port/<unit>/<register>/<type>)`;
      }
      if (t.fragment) return `Unexpected fragment '#${t.fragment}' in url '${redactUrl(entry.url)}'`;
      const address = parseAddress(entry);
      return "error" in address ? address.error : undefined;
    },
    groupKey: (entry) => `${scheme}://${endpointOf(entry)}`,
    endpoint: endpointOf,
    create: (entries, ctx) => new ModbusSource(entries, ctx, framing),
  };
}

function endpointOf(entry: MetricEntry): string {
  const host = entry.target.host.includes(":") ? `[${entry.target.host}]` : entry.target.host;
  return `${host}:${entry.target.port ?? DEFAULT_PORT}`;
}

export const modbus: Protocol<never> = makeProtocol("tcp");
export const modbusRtu: Protocol<never> = makeProtocol("rtu");

interface Item {
  entry: MetricEntry;
  address: RegisterAddress;
}

/** One read request: `count` registers of one unit and table from `start`. */
export interface Block {
  unit: number;
  table: Table;
  start: number;
  count: number;
  items: Item[];
}

/**
 * Splits the items into read requests: per unit and table, ranges that overlap or touch are
 * merged while the request stays within MAX_REGISTERS_PER_READ; `alone` items get a request of
 * their own.
 */
export function planReads(items: readonly Item[], alone: (item: Item) => boolean): Block[] {
  const blocks: Block[] = [];
  const sorted = [...items].sort((a, b) =>
    a.address.unit - b.address.unit || a.address.table.localeCompare(b.address.table) ||
    a.address.register - b.address.register
  );
  let open: Block | undefined;
  for (const item of sorted) {
    const { unit, table, register, type } = item.address;
    const end = register + type.registers;
    if (alone(item)) {
      blocks.push({ unit, table, start: register, count: type.registers, items: [item] });
      continue;
    }
    if (
      open && open.unit === unit && open.table === table && register <= open.start + open.count &&
      Math.max(end, open.start + open.count) - open.start <= MAX_REGISTERS_PER_READ
    ) {
      open.count = Math.max(end, open.start + open.count) - open.start;
      open.items.push(item);
      continue;
    }
    open = { unit, table, start: register, count: type.registers, items: [item] };
    blocks.push(open);
  }
  return blocks;
}

/** An open connection, and a promise that rejects when it closes or errors. */
interface Connection {
  client: Client;
  lost: Promise<never>;
}

/** A Modbus exception answer (the device understood the request and refused it). */
class ModbusException extends Error {}

class ModbusSource implements Source {
  #host: string;
  #port: number;
  #framing: Framing;
  #timeoutMs: number;
  #endpoint: string;
  #addresses = new Map<MetricEntry, RegisterAddress>();
  /** Items that got an exception when read alone: read alone until they read fine. */
  #isolated = new Set<string>();
  #connection: Connection | undefined;
  #closed = false;

  constructor(entries: readonly MetricEntry[], ctx: SourceContext, framing: Framing) {
    const t = entries[0]!.target;
    this.#host = t.host;
    this.#port = t.port ?? DEFAULT_PORT;
    this.#framing = framing;
    this.#timeoutMs = ctx.timeoutMs;
    this.#endpoint = `${framing === "tcp" ? "modbus" : "modbusrtu"}://${endpointOf(entries[0]!)}`;
  }

  async poll(entries: readonly MetricEntry[], signal: AbortSignal): Promise<PollResult> {
    if (this.#closed) throw new Error(`Modbus source ${this.#endpoint} is closed`);
    const readings: Reading[] = [];
    const errors: EntryError[] = [];
    const items: Item[] = [];
    for (const entry of entries) {
      const address = this.#address(entry);
      if ("error" in address) errors.push({ entry, message: address.error });
      else items.push({ entry, address });
    }
    const onAbort = () => this.#disconnect();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const connection = await this.#connect(signal);
      for (const block of planReads(items, (item) => this.#isolated.has(itemKey(item)))) {
        try {
          const registers = await this.#read(connection, block, signal);
          for (const item of block.items) {
            this.#isolated.delete(itemKey(item));
            readings.push(decodeItem(item, block, registers));
          }
        } catch (err) {
          if (!(err instanceof ModbusException)) throw err;
          if (block.items.length === 1) {
            this.#isolated.add(itemKey(block.items[0]!));
            errors.push({ entry: block.items[0]!.entry, message: err.message });
            continue;
          }
          // One register of the range may be the culprit: read each entry alone.
          for (const item of block.items) {
            const single: Block = { ...block, start: item.address.register, count: item.address.type.registers };
            try {
              readings.push(decodeItem(item, single, await this.#read(connection, single, signal)));
            } catch (e) {
              if (!(e instanceof ModbusException)) throw e;
              this.#isolated.add(itemKey(item));
              errors.push({ entry: item.entry, message: e.message });
            }
          }
        }
      }
    } catch (err) {
      this.#disconnect();
      throw signal.aborted ? signal.reason : err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    return { readings, errors };
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#disconnect();
    return Promise.resolve();
  }

  #address(entry: MetricEntry): RegisterAddress | { error: string } {
    const known = this.#addresses.get(entry);
    if (known) return known;
    const address = parseAddress(entry);
    if (!("error" in address)) this.#addresses.set(entry, address);
    return address;
  }

  async #connect(signal: AbortSignal): Promise<Connection> {
    if (this.#connection?.client.isOpen) return this.#connection;
    this.#disconnect();
    const client = await modbusClient();
    let fail: (err: Error) => void = () => {};
    const lost = new Promise<never>((_, reject) => fail = reject);
    lost.catch(() => {});
    // Without an 'error' listener, an EventEmitter 'error' event would throw out of the runtime.
    client.on("error", (e) => fail(new Error(`Connection to ${this.#endpoint} failed: ${describe(e)}`)));
    client.on("close", () => fail(new Error(`Connection to ${this.#endpoint} was closed`)));
    client.setTimeout(this.#timeoutMs);
    const connection = { client, lost };
    this.#connection = connection;
    const opening = this.#framing === "tcp"
      ? client.connectTCP(this.#host, { port: this.#port })
      : client.connectTelnet(this.#host, { port: this.#port });
    try {
      await guard(opening, signal, lost);
    } catch (err) {
      this.#disconnect();
      throw new Error(`Cannot connect to Modbus device ${this.#endpoint}: ${describe(err)}`);
    }
    return connection;
  }

  async #read({ client, lost }: Connection, block: Block, signal: AbortSignal): Promise<number[]> {
    client.setID(block.unit);
    const request = block.table === "holding"
      ? client.readHoldingRegisters(block.start, block.count)
      : client.readInputRegisters(block.start, block.count);
    const what = `${block.table} registers ${block.start}..${block.start + block.count - 1} of unit ${block.unit}` +
      ` at ${this.#endpoint}`;
    let data: number[];
    try {
      ({ data } = await guard(request, signal, lost));
    } catch (err) {
      const code = (err as { modbusCode?: unknown }).modbusCode;
      if (typeof code === "number") throw new ModbusException(`${describe(err)} reading ${what}`);
      throw new Error(`Reading ${what} failed: ${describe(err)}`);
    }
    if (data.length < block.count) {
      throw new Error(`Short answer reading ${what}: ${data.length} registers instead of ${block.count}`);
    }
    return data;
  }

  #disconnect(): void {
    this.#connection?.client.destroy(() => {});
    this.#connection = undefined;
  }
}

function itemKey(item: Item): string {
  const a = item.address;
  return `${a.unit}/${a.table}/${a.register}/${a.type.registers}`;
}

function decodeItem(item: Item, block: Block, registers: readonly number[]): Reading {
  const offset = item.address.register - block.start;
  const value = decodeRegisters(item.address.type, registers.slice(offset, offset + item.address.type.registers));
  return { entry: item.entry, value };
}

/** Settles with `p`, or rejects as soon as the signal aborts or the connection is lost. */
function guard<T>(p: Promise<T>, signal: AbortSignal, lost: Promise<never>): Promise<T> {
  // The library may still settle `p` after we gave up on it: never leave that unhandled.
  p.catch(() => {});
  if (signal.aborted) return Promise.reject(signal.reason);
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([p, aborted, lost]).finally(() => signal.removeEventListener("abort", onAbort));
}

/** Message of what modbus-serial rejects with: Errors, and plain objects with a message (its timeout). */
function describe(err: unknown): string {
  if (typeof err === "object" && err !== null) {
    const { message, name } = err as { message?: unknown; name?: unknown };
    if (typeof message === "string" && message !== "") return message;
    if (typeof name === "string") return name;
  }
  return String(err);
}
