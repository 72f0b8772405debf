import { ConfigError } from "../config/errors.ts";
import { pumpWattmetreStream, WATTMETRE_METRIC, WattmetreReader } from "../collect/wattmetre_reader.ts";
import { loadMappingFile } from "../config/wattmetre_mapping.ts";
import { logger } from "../log.ts";
import { parseCommand } from "./args.ts";
import { startPipeline } from "./pipeline.ts";
import { stopSignal } from "./signals.ts";

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
  const { mapping, problems, warnings } = loadMappingFile(c.mapping_file_path);
  if (problems.length > 0) throw new ConfigError(problems);
  for (const w of warnings) logger.warning(w.message, { where: w.line === undefined ? w.file : `${w.file}:${w.line}` });
  const stop = stopSignal({
    onHangup: () => logger.info("SIGHUP ignored: restart 'kwollector wattmetre' to read its configuration again"),
  });
  const pipeline = await startPipeline(c, { name: "wattmetre", signal: stop.signal, refreshPromotions: () => true });
  if (!pipeline) {
    stop.dispose();
    return 0;
  }
  const reader = new WattmetreReader({
    wattmetreId: c.wattmetre_id,
    mapping,
    isPromoted: (node) => pipeline.filter.isPromotedNode(node, WATTMETRE_METRIC),
    deliver: pipeline.deliver,
    telemetry: pipeline.telemetry,
  });
  logger.info("kwollector wattmetre started", { wattmetre_id: c.wattmetre_id, mapped_ports: mapping.size });
  let bug: unknown;
  await Promise.race([
    pumpWattmetreStream(Deno.stdin.readable, reader, stop.signal),
    pipeline.failure.catch((err) => bug = err),
  ]);
  await pipeline.stop();
  stop.dispose();
  if (bug !== undefined) throw bug;
  return 0;
}
