import dgram from "node:dgram";
import snmp from "net-snmp";
import type { ServedLog } from "./served.ts";

/**
 * A simulated 4-outlet PDU answering SNMP v2c GETs (community `public`) on 127.0.0.1, served by
 * net-snmp's agent. Scalars under a private enterprise arc (99999 is not assigned to any vendor):
 *
 *   1.3.6.1.4.1.99999.1.1.<outlet>.0   outlet active power, W (Gauge32), outlets 1..4
 *   1.3.6.1.4.1.99999.1.2.0            PDU active energy, Wh (Counter32)
 *
 * Each read computes a fresh value and records it in the ServedLog under the metric name the
 * demo's metrics.d gives that OID.
 */
export const PDU_OIDS = {
  outletPower: (outlet: number) => `1.3.6.1.4.1.99999.1.1.${outlet}.0`,
  energy: "1.3.6.1.4.1.99999.1.2.0",
};
export const PDU_OUTLETS = [1, 2, 3, 4];

export interface SimulatedPdu {
  port: number;
  close(): Promise<void>;
}

export async function startSnmpPdu(
  deviceId: string,
  metricOf: (oid: string) => string,
  served: ServedLog,
): Promise<SimulatedPdu> {
  const port = await freeUdpPort();
  const agent = snmp.createAgent(
    { port, address: "127.0.0.1" },
    (error: Error | null) => {
      if (error) console.error(`Simulated PDU on 127.0.0.1:${port}/udp: ${error.message}`);
    },
  );
  agent.getAuthorizer().addCommunity("public");
  const mib = agent.getMib();
  let reads = 0;
  let energyWh = 120_000;
  const serve =
    (oid: string, compute: () => number) => (request: { instanceNode: { value: number }; done(): void }) => {
      const value = compute();
      request.instanceNode.value = value;
      served.record(deviceId, metricOf(oid), value);
      request.done();
    };
  for (const outlet of PDU_OUTLETS) {
    const name = `outletPower${outlet}`;
    const oid = PDU_OIDS.outletPower(outlet);
    mib.registerProvider({
      name,
      type: snmp.MibProviderType.Scalar,
      oid: oid.replace(/\.0$/, ""),
      scalarType: snmp.ObjectType.Gauge32,
      maxAccess: snmp.MaxAccess["read-only"],
      handler: serve(oid, () => 80 * outlet + ((++reads * 13 + outlet * 7) % 50)),
    });
    mib.setScalarValue(name, 0);
  }
  mib.registerProvider({
    name: "energy",
    type: snmp.MibProviderType.Scalar,
    oid: PDU_OIDS.energy.replace(/\.0$/, ""),
    scalarType: snmp.ObjectType.Counter32,
    maxAccess: snmp.MaxAccess["read-only"],
    handler: serve(PDU_OIDS.energy, () => (energyWh += 1 + (reads % 3))),
  });
  mib.setScalarValue("energy", energyWh);
  return {
    port,
    close: () => new Promise<void>((resolve) => agent.close(() => resolve())),
  };
}

/** A UDP port free right now (net-snmp's agent cannot bind port 0: it turns 0 into 161). */
function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}
