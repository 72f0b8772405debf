import { connect, endpointOf } from "../central/connect.ts";
import { PromotionFilter, PromotionRefresher } from "../collect/promotion.ts";
import { ConfigError } from "../config/errors.ts";
import { Forwarder } from "../forward/forwarder.ts";
import { loadMappingFile, pumpWattmetreStream, WATTMETRE_METRIC, WattmetreReader } from "../sources/wattmetre.ts";
import { logger } from "../log.ts";
import { parseCommand } from "./args.ts";
import { CONDITIONS } from "../telemetry/events.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { openSpool, startTelemetry, stopSignal, surviveStrayErrors } from "./runtime.ts";

export const WATTMETRE_HELP = `kwollector wattmetre [CONFIG] [--key value ...]

Reads wattmetre-read output on standard input (timestamp, OK, one power value per port),
spools 1 Hz averages per port, and every raw sample (~50 Hz) for ports whose node has a
promoted wattmetre_power_watt; forwards them like 'run'. Exits 0 at the end of input, after
committing every sample. Nothing is lost while the central database is down.

Examples:
  wattmetre-read /dev/ttyUSB0 42 20 | kwollector wattmetre /etc/kwollect/wattmetre.yaml
  ... | kwollector wattmetre --wattmetre_id wattmetre1 --mapping_file_path mapping.yaml`;

export async function wattmetreCommand(argv: string[]): Promise<number> {
  const { resolved } = parseCommand(argv);
  const c = resolved.config;
  surviveStrayErrors();
  const { mapping, problems, warnings } = loadMappingFile(c.mapping_file_path);
  if (problems.length > 0) throw new ConfigError(problems);
  for (const w of warnings) logger.warning(w.message, { where: w.line === undefined ? w.file : `${w.file}:${w.line}` });
  const telemetry = new Telemetry({ conditions: CONDITIONS });
  const spool = openSpool(c, "writer", telemetry);
  const stop = stopSignal();
  const filter = new PromotionFilter();
  const refresher = new PromotionRefresher({
    filter,
    spool,
    connect: () => connect(endpointOf(c), { applicationName: "kwollector wattmetre" }),
    refreshMs: c.promoted_refresh_ms,
  });
  const forwarder = new Forwarder({ spool, endpoint: endpointOf(c), config: c, telemetry });
  const health = startTelemetry({ config: c, spool, telemetry, forwarder });
  const reader = new WattmetreReader({
    wattmetreId: c.wattmetre_id,
    mapping,
    isPromoted: (node) => filter.isPromotedNode(node, WATTMETRE_METRIC),
    deliver: (samples) => spool.append(samples),
    telemetry,
  });
  refresher.start();
  const forwarding = new AbortController();
  const forwardLoop = forwarder.run(forwarding.signal);
  logger.info("kwollector wattmetre started", { wattmetre_id: c.wattmetre_id, mapped_ports: mapping.size });
  await pumpWattmetreStream(Deno.stdin.readable, reader, stop.signal);
  await health.stop();
  spool.commitPending();
  await refresher.stop();
  forwarding.abort();
  await forwardLoop;
  await forwarder.close();
  spool.close();
  stop.dispose();
  return 0;
}
