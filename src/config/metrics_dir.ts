import { join } from "node:path";
import type { Labels } from "../sample.ts";
import { type Problem } from "./errors.ts";
import { type MetricUrl, parseMetricUrl } from "./metric_url.ts";
import { type Located, parseLocatedYaml, plain } from "./yaml_file.ts";
import { registerSecret } from "../log.ts";

/** One metric entry of a metrics.d file, with Kwollect's keys and meaning. */
export interface MetricEntry {
  /** Becomes the metric_id (Prometheus entries produce `prom_<name>` ids instead). */
  name: string;
  deviceId: string;
  url: string;
  target: MetricUrl;
  updateEveryMs: number;
  scaleFactor: number | undefined;
  labels: Labels;
  optional: boolean;
  file: string;
  line: number;
}

export const DEFAULT_UPDATE_EVERY_MS = 10000;

const ENTRY_KEYS = new Set([
  "name",
  "device_id",
  "url",
  "update_every",
  "scale_factor",
  "labels",
  "optional",
  // Kwollect's internal fields, accepted because its dataclass accepted them.
  "path",
  "path_template",
]);

/**
 * Loads every `*.yaml`/`*.yml` file of a metrics.d directory as Kwollect does: a file holds a
 * list of entries, one entry, or nothing. Problems of every file are collected, each with its
 * file and line; entries with problems are left out.
 */
export function loadMetricsDir(dir: string): { entries: MetricEntry[]; problems: Problem[] } {
  const problems: Problem[] = [];
  const entries: MetricEntry[] = [];
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)]
      .filter((e) => (e.isFile || e.isSymlink) && /\.ya?ml$/i.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    return {
      entries,
      problems: [{ file: dir, key: "metrics_dir", message: `Cannot read directory: ${(err as Error).message}` }],
    };
  }
  for (const name of names) {
    const file = join(dir, name);
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch (err) {
      problems.push({ file, message: `Cannot read file: ${(err as Error).message}` });
      continue;
    }
    const parsed = parseMetricsText(text, file);
    entries.push(...parsed.entries);
    problems.push(...parsed.problems);
  }
  return { entries, problems };
}

export function parseMetricsText(text: string, file: string): { entries: MetricEntry[]; problems: Problem[] } {
  const { doc, problems } = parseLocatedYaml(text, file);
  const entries: MetricEntry[] = [];
  if (doc === undefined) return { entries, problems };
  const items = doc.kind === "seq" ? doc.items : [doc];
  for (const item of items) {
    const entry = parseEntry(item, file, problems);
    if (entry) entries.push(entry);
  }
  return { entries, problems };
}

function parseEntry(node: Located, file: string, problems: Problem[]): MetricEntry | undefined {
  if (node.kind === "scalar" && node.value === null) return undefined;
  if (node.kind !== "map") {
    problems.push({ file, line: node.line, message: "Expected a metric entry (a mapping with name, device_id, url)" });
    return undefined;
  }
  const before = problems.length;
  const fields = new Map<string, { value: Located; line: number }>();
  for (const e of node.entries) {
    if (!ENTRY_KEYS.has(e.key)) {
      problems.push({ file, line: e.keyLine, key: e.key, message: "Unknown key in metric entry" });
      continue;
    }
    fields.set(e.key, { value: e.value, line: e.keyLine });
  }
  const str = (key: string): string | undefined => {
    const f = fields.get(key);
    if (!f) {
      problems.push({ file, line: node.line, key, message: "Missing required key" });
      return undefined;
    }
    const v = f.value.kind === "scalar" ? f.value.value : undefined;
    if (v === null || v === undefined || v === "" || typeof v === "object") {
      problems.push({ file, line: f.line, key, message: "Expected a non-empty text value" });
      return undefined;
    }
    return String(v);
  };
  const name = str("name");
  const deviceId = str("device_id");
  const url = str("url");

  let updateEveryMs = DEFAULT_UPDATE_EVERY_MS;
  const ue = fields.get("update_every");
  if (ue) {
    const v = ue.value.kind === "scalar" ? Number(ue.value.value) : NaN;
    if (!Number.isInteger(v) || v < 1) {
      problems.push({
        file,
        line: ue.line,
        key: "update_every",
        message: `Invalid value ${quote(ue.value)}: expected a whole number of milliseconds ≥ 1`,
      });
    } else updateEveryMs = v;
  }

  let scaleFactor: number | undefined;
  const sf = fields.get("scale_factor");
  if (sf && !(sf.value.kind === "scalar" && sf.value.value === null)) {
    const v = sf.value.kind === "scalar" ? Number(sf.value.value) : NaN;
    if (!Number.isFinite(v)) {
      problems.push({
        file,
        line: sf.line,
        key: "scale_factor",
        message: `Invalid value ${quote(sf.value)}: expected a number`,
      });
    } else scaleFactor = v;
  }

  let labels: Labels = {};
  const lb = fields.get("labels");
  if (lb && !(lb.value.kind === "scalar" && lb.value.value === null)) {
    if (lb.value.kind !== "map") {
      problems.push({ file, line: lb.line, key: "labels", message: "Expected a mapping of label names to values" });
    } else labels = plain(lb.value) as Labels;
  }

  let optional = false;
  const op = fields.get("optional");
  if (op) {
    const v = op.value.kind === "scalar" ? op.value.value : undefined;
    if (typeof v === "boolean") optional = v;
    else if (v === null) optional = false;
    else {problems.push({
        file,
        line: op.line,
        key: "optional",
        message: `Invalid value ${quote(op.value)}: expected true or false`,
      });}
  }

  let target: MetricUrl | undefined;
  if (url !== undefined) {
    const parsed = parseMetricUrl(url);
    if ("error" in parsed) {
      problems.push({ file, line: fields.get("url")?.line ?? node.line, key: "url", message: parsed.error });
    } else {
      target = parsed;
      registerSecret(parsed.password);
    }
  }
  if (problems.length > before || !name || !deviceId || !url || !target) return undefined;
  return {
    name,
    deviceId,
    url,
    target,
    updateEveryMs,
    scaleFactor,
    labels,
    optional,
    file,
    line: node.line,
  };
}

function quote(node: Located): string {
  return node.kind === "scalar" ? JSON.stringify(String(node.value)) : `(${node.kind})`;
}
