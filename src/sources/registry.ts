import type { Protocol } from "./source.ts";
import { prometheus } from "./prometheus.ts";
import { ipmi } from "./ipmi.ts";
import { modbus, modbusRtu } from "./modbus.ts";
import { snmp } from "./snmp.ts";
import { redfish } from "./redfish.ts";

/** URL scheme → protocol. One line per protocol. */
export const PROTOCOLS: Record<string, Protocol> = {
  prometheus,
  ipmisensor: ipmi,
  modbus,
  modbusrtu: modbusRtu,
  snmp,
  snmpv1: snmp,
  snmpv3: snmp,
  https: redfish,
  http: redfish,
};
