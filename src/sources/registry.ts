import type { Protocol } from "./source.ts";
import { prometheus } from "./prometheus/prometheus.ts";
import { ipmi } from "./ipmi/ipmi.ts";
import { modbus, modbusRtu } from "./modbus/modbus.ts";
import { snmp } from "./snmp/snmp.ts";
import { redfish } from "./redfish/redfish.ts";

/** URL scheme → protocol, one line each; a protocol lives in its own folder (docs/DESIGN.md: adding one). */
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
