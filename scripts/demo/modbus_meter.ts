import ModbusMod from "modbus-serial";
import type { ServedLog } from "./served.ts";

// modbus-serial's typings declare an ES default export, the runtime is CommonJS.
const ServerTCP = (ModbusMod as unknown as { ServerTCP: typeof ModbusMod.ServerTCP }).ServerTCP;

/**
 * A simulated energy meter answering Modbus TCP on 127.0.0.1 (any unit id), served by
 * modbus-serial's ServerTCP. Holding registers, big-endian words:
 *
 *   0-1  active energy, Wh, uint32
 *   2-3  active power, W, float32
 *   4    voltage, V, uint16
 *
 * A value is recorded in the ServedLog each time a read covers all of its registers.
 */
export interface MeterRegister {
  metricId: string;
  address: number;
  type: "uint32" | "float32" | "uint16";
}

export const METER_REGISTERS: readonly MeterRegister[] = [
  { metricId: "meter_energy_wh", address: 0, type: "uint32" },
  { metricId: "meter_power_w", address: 2, type: "float32" },
  { metricId: "meter_voltage_v", address: 4, type: "uint16" },
];

const WORDS = { uint32: 2, float32: 2, uint16: 1 } as const;

export interface SimulatedMeter {
  port: number;
  close(): Promise<void>;
}

export async function startModbusMeter(deviceId: string, served: ServedLog): Promise<SimulatedMeter> {
  let reads = 0;
  let energyWh = 3_500_000;
  const read = (address: number, length: number): number[] => {
    reads++;
    // Quarter watts: exact in float32, so served and stored values compare exactly.
    const values: Record<string, number> = {
      meter_energy_wh: energyWh += 2 + (reads % 5),
      meter_power_w: 950 + ((reads * 29) % 400) / 4,
      meter_voltage_v: 228 + (reads % 5),
    };
    const words = new Array<number>(length).fill(0);
    for (const r of METER_REGISTERS) {
      const n = WORDS[r.type];
      if (r.address < address || r.address + n > address + length) continue;
      const value = values[r.metricId]!;
      const buf = new DataView(new ArrayBuffer(4));
      if (r.type === "float32") buf.setFloat32(0, value);
      else buf.setUint32(0, value);
      const encoded = n === 2 ? [buf.getUint16(0), buf.getUint16(2)] : [buf.getUint16(2)];
      encoded.forEach((w, i) => (words[r.address - address + i] = w));
      served.record(deviceId, r.metricId, value);
    }
    return words;
  };
  const port = await freeTcpPort();
  const server = new ServerTCP({
    getMultipleHoldingRegisters: (address: number, length: number) => read(address, length),
    getHoldingRegister: (address: number) => read(address, 1)[0]!,
  }, { host: "127.0.0.1", port });
  await new Promise<void>((resolve, reject) => {
    server.on("initialized", () => resolve());
    server.on("serverError", reject);
  });
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A TCP port free right now (ServerTCP cannot listen on port 0: it turns 0 into 502). */
function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
