/**
 * Many simulated SNMP agents in one process, for the fleet benchmark: one net-snmp Agent per UDP
 * port given on the command line (127.0.0.1), all sharing one MIB of `--oids` Gauge32 scalars
 * under 1.3.6.1.4.1.99999.1.<n>.0, community `public`. Runs until killed; the parent sees the
 * agents listening in /proc/net/udp.
 *
 *   deno run -A scripts/bench/snmp_agents.ts --oids 20 PORT...
 */
import snmp from "net-snmp";

const BASE = "1.3.6.1.4.1.99999.1";

const args = [...Deno.args];
let oids = 20;
const at = args.indexOf("--oids");
if (at >= 0) oids = Number(args.splice(at, 2)[1]);
const ports = args.map(Number);
if (!Number.isInteger(oids) || oids < 1 || ports.length === 0 || ports.some((p) => !Number.isInteger(p))) {
  console.error("Usage: snmp_agents.ts [--oids N] PORT...");
  Deno.exit(2);
}

const mib = snmp.createMib();
for (let n = 1; n <= oids; n++) {
  mib.registerProvider({
    name: `g${n}`,
    type: snmp.MibProviderType.Scalar,
    oid: `${BASE}.${n}`,
    scalarType: snmp.ObjectType.Gauge32,
    maxAccess: snmp.MaxAccess["read-only"],
  });
  mib.setScalarValue(`g${n}`, n);
}

for (const port of ports) {
  const agent = snmp.createAgent({ port, address: "127.0.0.1" }, (err: Error | null) => {
    if (err) console.error(`Agent on port ${port}: ${err.message}`);
  }, mib);
  agent.getAuthorizer().addCommunity("public");
}
