import type { Problem } from "./errors.ts";
import { parseLocatedYaml } from "./yaml_file.ts";

/**
 * The wattmeter mapping file (`mapping_file_path`): which nodes each port of a wattmeter powers,
 * as Kwollect's kwollector-wattmetre read it.
 */

const PORT_RE = /^(.+)-port(\d+)$/;

export interface WattmeterMapping {
  /** Port device id → the nodes it powers, in file order. */
  mapping: Map<string, string[]>;
  /** The file cannot be used (not YAML, not a mapping of nodes): kwollector wattmetre exits. */
  problems: Problem[];
  /** Parts ignored, and ports mapped to several nodes: logged at warning, the stream is read. */
  warnings: Problem[];
}

/**
 * Parses a mapping file: `<node>: [<wattmetre_id>-port<N>, ...]` (a single port may be written
 * without brackets). A file may describe several wattmeters (Grid'5000 generates one per site):
 * ports of other wattmeter ids are kept and simply never match this reader's ports.
 *
 * Every file Kwollect accepts is accepted: only a file that is not YAML, or not a mapping of
 * nodes, is refused. A value that is not a port (`wattmetre1-prt4`, a mapping) matches no port
 * and is ignored with a warning naming its line. A port listed under several nodes (Grid'5000's
 * generator lists a shared PSU's ports under each of its nodes) is mapped to all of them, and
 * one warning names every such port with its nodes.
 */
export function parseMappingFile(text: string, file: string): WattmeterMapping {
  const mapping = new Map<string, string[]>();
  const warnings: Problem[] = [];
  const { doc, problems } = parseLocatedYaml(text, file);
  if (doc === undefined) return { mapping, problems, warnings };
  if (doc.kind !== "map") {
    problems.push({
      file,
      line: doc.line,
      message: "Expected a mapping of node names to lists of wattmeter ports (node: [wattmetre1-port3, ...])",
    });
    return { mapping, problems, warnings };
  }
  for (const { key: node, keyLine, value } of doc.entries) {
    const items = value.kind === "seq" ? value.items : value.kind === "scalar" && value.value !== null ? [value] : [];
    if (value.kind === "map") {
      warnings.push({ file, line: keyLine, key: node, message: "Expected a list of wattmeter ports; ignored" });
      continue;
    }
    for (const item of items) {
      const text = item.kind === "scalar" ? String(item.value) : undefined;
      const m = text === undefined ? null : PORT_RE.exec(text.trim());
      if (!m) {
        warnings.push({
          file,
          line: item.line,
          key: node,
          message: `Invalid wattmeter port ${
            text === undefined ? `(${item.kind})` : `'${text}'`
          }: expected <wattmetre_id>-port<N>; ignored`,
        });
        continue;
      }
      const port = `${m[1]}-port${Number(m[2])}`;
      const nodes = mapping.get(port);
      if (!nodes) mapping.set(port, [node]);
      else if (!nodes.includes(node)) nodes.push(node);
    }
  }
  const shared = [...mapping].filter(([, nodes]) => nodes.length > 1);
  if (shared.length > 0) {
    warnings.push({
      file,
      message: `Wattmeter ports mapped to several nodes (a shared PSU measures all its nodes together), stored ` +
        `without _device_alias: ${shared.map(([port, nodes]) => `${port} (${nodes.join(", ")})`).join(", ")}`,
    });
  }
  return { mapping, problems, warnings };
}

/** Reads and parses `mapping_file_path` ("" means no mapping). */
export function loadMappingFile(path: string): WattmeterMapping {
  if (path === "") return { mapping: new Map(), problems: [], warnings: [] };
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    return {
      mapping: new Map(),
      problems: [{ file: path, key: "mapping_file_path", message: `Cannot read file: ${(err as Error).message}` }],
      warnings: [],
    };
  }
  return parseMappingFile(text, path);
}
