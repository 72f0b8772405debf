import { METER_REGISTERS, startModbusMeter } from "./modbus_meter.ts";
import { metricsEntry } from "../harness/config.ts";
import { startComputeNode } from "./compute_node.ts";
import type { ServedLog } from "./served.ts";
import { PDU_OIDS, PDU_OUTLETS, startSnmpPdu } from "./snmp_pdu.ts";

/**
 * The demo's simulated rack on 127.0.0.1: a compute node's Prometheus exporter, an SNMP PDU and a
 * Modbus energy meter, with the metrics.d file that polls them.
 */
export interface Rack {
  /** Device ids, as stored in the central table. */
  deviceIds: string[];
  /** One line per device, for people. */
  descriptions: string[];
  /** metrics.d content (YAML). */
  metricsYaml: string;
  entries: number;
  close(): Promise<void>;
}

const NODE = "demo-node-1";
const PDU = "demo-pdu-1";
const METER = "demo-meter-1";
const MODBUS_TYPES = { uint32: "be_be_u32", float32: "be_be_f32", uint16: "be_u16" } as const;

export async function startRack(served: ServedLog): Promise<Rack> {
  const exporter = startComputeNode(NODE, served);
  const pdu = await startSnmpPdu(PDU, (oid) => (oid === PDU_OIDS.energy ? "pdu_energy_wh" : "outlet_power_w"), served)
    .catch(async (err) => {
      await exporter.close();
      throw err;
    });
  const meter = await startModbusMeter(METER, served).catch(async (err) => {
    await Promise.all([exporter.close(), pdu.close()]);
    throw err;
  });
  const entries = [
    entry(NODE, "node_exporter", `prometheus://127.0.0.1:${exporter.port}/`, 500),
    ...PDU_OUTLETS.map((outlet) =>
      entry(PDU, "outlet_power_w", `snmp://public@127.0.0.1:${pdu.port}/${PDU_OIDS.outletPower(outlet)}`, 1000, {
        outlet: String(outlet),
      })
    ),
    entry(PDU, "pdu_energy_wh", `snmp://public@127.0.0.1:${pdu.port}/${PDU_OIDS.energy}`, 1000),
    ...METER_REGISTERS.map((r) =>
      entry(METER, r.metricId, `modbus://127.0.0.1:${meter.port}/1/${r.address}/${MODBUS_TYPES[r.type]}`, 1000)
    ),
  ];
  return {
    deviceIds: [NODE, PDU, METER],
    descriptions: [
      `${NODE}  Prometheus exporter  127.0.0.1:${exporter.port}      4 samples every 500 ms`,
      `${PDU}   SNMP v2c PDU         127.0.0.1:${pdu.port}/udp  5 OIDs every second`,
      `${METER} Modbus TCP meter     127.0.0.1:${meter.port}      3 registers every second`,
    ],
    metricsYaml: entries.join(""),
    entries: entries.length,
    async close() {
      await Promise.all([exporter.close(), pdu.close(), meter.close()]);
    },
  };
}

function entry(deviceId: string, name: string, url: string, updateEveryMs: number, labels?: Record<string, string>) {
  return metricsEntry({ name, deviceId, url, updateEveryMs, ...(labels && { labels }) });
}
