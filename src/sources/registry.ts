import type { Protocol } from "./source.ts";

/**
 * URL scheme → its protocol's module, one line each; a protocol lives in its own folder
 * (docs/DESIGN.md: adding one). A module is loaded the first time metrics.d names one of its
 * schemes, so a collector carries the code of the protocols it polls only: an idle collector
 * holds about 2 MB less than with the five loaded (docs/PERFORMANCE.md `codecache18`).
 */
const MODULES: Record<string, () => Promise<Protocol>> = {
  prometheus: async () => (await import("./prometheus/prometheus.ts")).prometheus,
  ipmisensor: async () => (await import("./ipmi/ipmi.ts")).ipmi,
  modbus: async () => (await import("./modbus/modbus.ts")).modbus,
  modbusrtu: async () => (await import("./modbus/modbus.ts")).modbusRtu,
  snmp: async () => (await import("./snmp/snmp.ts")).snmp,
  snmpv1: async () => (await import("./snmp/snmp.ts")).snmp,
  snmpv3: async () => (await import("./snmp/snmp.ts")).snmp,
  https: async () => (await import("./redfish/redfish.ts")).redfish,
  http: async () => (await import("./redfish/redfish.ts")).redfish,
};

/** Every scheme a metrics.d url may use. */
export const SCHEMES: readonly string[] = Object.keys(MODULES);

/** Scheme → protocol, for the schemes loaded. */
export type Protocols = ReadonlyMap<string, Protocol>;

/** Loads the protocols of `schemes` (each module once); a scheme no protocol has is left out. */
export async function loadProtocols(schemes: Iterable<string>): Promise<Protocols> {
  const loaded = new Map<string, Protocol>();
  for (const scheme of new Set(schemes)) {
    const load = Object.hasOwn(MODULES, scheme) ? MODULES[scheme] : undefined;
    if (load) loaded.set(scheme, await load());
  }
  return loaded;
}
