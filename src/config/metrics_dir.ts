import { join } from "node:path";
import type { Labels } from "../sample.ts";
import { type Config, DEFAULTS, TIMER_MAX_MS, TIMER_NOTE } from "./defaults.ts";
import { type Problem } from "./errors.ts";
import { type MetricUrl, parseMetricUrl, type UrlParts } from "./metric_url.ts";
import { type Located, plain } from "./yaml_file.ts";
import { parseYamlItems } from "./yaml_items.ts";
import { registerSecret } from "../log.ts";
import { ownCopy } from "../bounded_cache.ts";

/**
 * metrics.d, read as Kwollect reads it (`glob(metrics_dir + "/*")`): every file directly in
 * `metrics_dir` whose name does not start with a dot, whatever its extension (Grid'5000's
 * generator writes `<device>.conf`), in name order, symlinks followed. A file holds a list of
 * entries, one entry, or nothing (comments only). Problems of every file are collected, each
 * with its file and line; an entry with a problem is left out, the others are kept.
 *
 * Bounds on what a file can make the collector hold (its heap is 64 MB):
 * - only regular files are read (after following symlinks): a FIFO, a device (a symlink to
 *   /dev/zero), a socket is refused by name and never opened, so it can neither block the
 *   collector nor feed it without end; a subdirectory is skipped with a warning;
 * - a file larger than `metrics_file_max_bytes` is refused without being read;
 * - a file of more than `metrics_file_max_entries` entries is refused, counted before parsing;
 * - once `metrics_max_entries` entries are loaded, a file that would exceed it is refused whole
 *   (the files before it, in name order, are kept);
 * - a list is parsed one entry at a time (yaml_items.ts).
 * Each refusal is an error naming the file; the other files load.
 *
 * Warnings (the configuration is valid, but probably not what the operator meant): a
 * directory that yields no entry at all, and an entry that repeats the series of another
 * (same device_id, name and labels), naming both file:line.
 */

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

/** The labels of every entry that has none (shared: a metrics.d file may hold thousands of entries). */
const NO_LABELS: Labels = Object.freeze({});

export interface MetricsDirLimits {
  fileMaxBytes: number;
  fileMaxEntries: number;
  maxEntries: number;
}

export const DEFAULT_LIMITS: MetricsDirLimits = {
  fileMaxBytes: DEFAULTS.metrics_file_max_bytes.default,
  fileMaxEntries: DEFAULTS.metrics_file_max_entries.default,
  maxEntries: DEFAULTS.metrics_max_entries.default,
};

export function metricsDirLimits(c: Config): MetricsDirLimits {
  return {
    fileMaxBytes: c.metrics_file_max_bytes,
    fileMaxEntries: c.metrics_file_max_entries,
    maxEntries: c.metrics_max_entries,
  };
}

export interface MetricsDir {
  dir: string;
  /** Files read (whether or not they held entries). */
  files: number;
  entries: MetricEntry[];
  /** Errors: the entry or file named is left out. */
  problems: Problem[];
  warnings: Problem[];
}

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

export function loadMetricsDir(dir: string, limits: MetricsDirLimits = DEFAULT_LIMITS): MetricsDir {
  const loaded: MetricsDir = { dir, files: 0, entries: [], problems: [], warnings: [] };
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((e) => e.name).filter((name) => !name.startsWith(".")).sort();
  } catch (err) {
    loaded.problems.push({
      file: dir,
      key: "metrics_dir",
      message: `Cannot read directory: ${(err as Error).message}`,
    });
    return loaded;
  }
  for (const name of names) {
    const file = join(dir, name);
    const read = readMetricsFile(file, limits.fileMaxBytes);
    if ("skip" in read) {
      loaded.warnings.push({ file, message: read.skip });
      continue;
    }
    if ("error" in read) {
      loaded.problems.push({ file, message: read.error });
      continue;
    }
    loaded.files++;
    const parsed = parseMetricsText(read.text, file, limits.fileMaxEntries);
    const total = loaded.entries.length + parsed.entries.length;
    if (total > limits.maxEntries) {
      loaded.problems.push({
        file,
        message: `File refused: its ${parsed.entries.length} entries would bring metrics.d to ${total}, ` +
          `more than metrics_max_entries (${limits.maxEntries})`,
      });
      continue;
    }
    loaded.entries.push(...parsed.entries);
    loaded.problems.push(...parsed.problems);
  }
  if (loaded.entries.length === 0) {
    loaded.warnings.push({
      file: dir,
      key: "metrics_dir",
      message: `No metric entry in ${loaded.files} file(s) read: nothing will be collected`,
    });
  }
  loaded.warnings.push(...repeatedSeries(loaded.entries));
  return loaded;
}

/**
 * The text of a metrics.d file, or why it is not read. Its type is checked before it is opened
 * (opening a FIFO would block until a writer comes), and again on the open file.
 */
function readMetricsFile(file: string, maxBytes: number): { text: string } | { error: string } | { skip: string } {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(file);
  } catch (err) {
    return { error: `Cannot read file: ${(err as Error).message}` };
  }
  if (info.isDirectory) return { skip: "Subdirectory ignored: metrics.d files are read from metrics_dir itself" };
  if (!info.isFile) return { error: `Not a regular file (${kindOf(info)}): refused, never read` };
  if (info.size > maxBytes) return { error: tooBig(info.size, maxBytes) };
  let bytes: Uint8Array;
  try {
    using handle = Deno.openSync(file, { read: true });
    const opened = handle.statSync();
    if (!opened.isFile) return { error: `Not a regular file (${kindOf(opened)}): refused, never read` };
    bytes = new Uint8Array(Math.min(opened.size, maxBytes) + 1);
    let length = 0;
    for (;;) {
      const n = handle.readSync(bytes.subarray(length));
      if (n === null || n === 0) break;
      length += n;
      if (length > maxBytes) return { error: tooBig(length, maxBytes) };
      if (length === bytes.length) {
        const grown = new Uint8Array(Math.min(bytes.length * 2, maxBytes + 1));
        grown.set(bytes);
        bytes = grown;
      }
    }
    bytes = bytes.subarray(0, length);
  } catch (err) {
    return { error: `Cannot read file: ${(err as Error).message}` };
  }
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    return { error: "Not UTF-8 text: is this a metrics.d file?" };
  }
}

function tooBig(size: number, maxBytes: number): string {
  return `File of ${size} bytes is larger than metrics_file_max_bytes (${maxBytes}): refused`;
}

function kindOf(info: Deno.FileInfo): string {
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  return "not a file";
}

/** Entries of one file's text; more than `maxEntries` refuses the whole file. */
export function parseMetricsText(
  text: string,
  file: string,
  maxEntries: number = DEFAULT_LIMITS.fileMaxEntries,
): { entries: MetricEntry[]; problems: Problem[] } {
  const parsed = parseYamlItems(text, file, maxEntries);
  if (parsed.kind === "too many") {
    return {
      entries: [],
      problems: [{
        file,
        message: `File of ${parsed.count} entries has more than metrics_file_max_entries (${maxEntries}): refused`,
      }],
    };
  }
  const { items, problems } = parsed;
  const entries: MetricEntry[] = [];
  const urlParts: UrlParts = new Map();
  for (const item of items) {
    const entry = parseEntry(item, file, problems, urlParts);
    if (entry) entries.push(entry);
  }
  return { entries, problems };
}

/** Warnings for entries that repeat the (device, name, labels) of an earlier one. */
function repeatedSeries(entries: readonly MetricEntry[]): Problem[] {
  const first = new Map<string, MetricEntry>();
  const warnings: Problem[] = [];
  for (const e of entries) {
    const key = `${e.deviceId}\u0000${e.name}\u0000${canonicalLabels(e.labels)}`;
    const earlier = first.get(key);
    if (!earlier) {
      first.set(key, e);
      continue;
    }
    warnings.push({
      file: e.file,
      line: e.line,
      message: `Entry repeats the series of ${earlier.file}:${earlier.line} ` +
        `(device_id '${e.deviceId}', name '${e.name}', same labels)`,
    });
  }
  return warnings;
}

/** Labels as text that does not depend on the order of their keys. */
export function canonicalLabels(labels: Labels): string {
  return JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
}

/**
 * The texts an entry keeps (name, device, URL) are strings of their own (`ownCopy`), not slices of
 * the file's text: a slice keeps the whole text in memory for as long as the entry lives.
 */
function parseEntry(node: Located, file: string, problems: Problem[], urlParts: UrlParts): MetricEntry | undefined {
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
    return ownCopy(String(v));
  };
  const name = str("name");
  const deviceId = str("device_id");
  const url = str("url");

  let updateEveryMs = DEFAULT_UPDATE_EVERY_MS;
  const ue = fields.get("update_every");
  if (ue) {
    const v = ue.value.kind === "scalar" ? Number(ue.value.value) : NaN;
    if (!Number.isInteger(v) || v < 1 || v > TIMER_MAX_MS) {
      problems.push({
        file,
        line: ue.line,
        key: "update_every",
        message: `Invalid value ${quote(ue.value)}: expected a whole number of milliseconds from 1 to ${TIMER_MAX_MS}${
          v > TIMER_MAX_MS ? TIMER_NOTE : ""
        }`,
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

  let labels = NO_LABELS;
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
    const parsed = parseMetricUrl(url, urlParts);
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
