import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Problem } from "./errors.ts";

/** A YAML value with the line it starts on, so validation errors can point at it. */
export type Located =
  | { kind: "scalar"; value: unknown; line: number }
  | { kind: "map"; entries: { key: string; keyLine: number; value: Located }[]; line: number }
  | { kind: "seq"; items: Located[]; line: number };

const MAX_ALIASES = 100;

/**
 * Parses YAML text into located values. Syntax errors are returned as problems with their
 * line; the document is then undefined. `lineOffset` is added to every line: the text is a
 * piece of `file` starting after that many lines.
 */
export function parseLocatedYaml(
  text: string,
  file: string,
  opts: { lineOffset?: number } = {},
): { doc: Located | undefined; problems: Problem[] } {
  const offset = opts.lineOffset ?? 0;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    return {
      doc: undefined,
      problems: doc.errors.map((e) => ({
        file,
        line: lineCounter.linePos(e.pos[0]).line + offset,
        message: `Invalid YAML: ${e.message.split("\n")[0]}`,
      })),
    };
  }
  const lineOf = (node: unknown): number => {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return (range ? lineCounter.linePos(range[0]).line : 1) + offset;
  };
  // An alias stands for its anchored node, as in PyYAML; a bound on expansions keeps an alias
  // bomb ("billion laughs") from taking the memory.
  let aliases = 0;
  const problems: Problem[] = [];
  const convert = (node: unknown): Located => {
    if (isAlias(node)) {
      if (++aliases > MAX_ALIASES) {
        if (aliases === MAX_ALIASES + 1) {
          problems.push({ file, line: lineOf(node), message: `More than ${MAX_ALIASES} aliases: refused` });
        }
        return { kind: "scalar", value: null, line: lineOf(node) };
      }
      const target = node.resolve(doc);
      if (target === undefined) {
        problems.push({ file, line: lineOf(node), message: `Invalid YAML: unresolved alias *${node.source}` });
        return { kind: "scalar", value: null, line: lineOf(node) };
      }
      return convert(target);
    }
    if (isMap(node)) {
      return {
        kind: "map",
        line: lineOf(node),
        entries: node.items.map((pair) => {
          const keyNode = pair.key;
          const key = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
          return { key, keyLine: lineOf(keyNode), value: convert(pair.value) };
        }),
      };
    }
    if (isSeq(node)) {
      return { kind: "seq", line: lineOf(node), items: node.items.map(convert) };
    }
    if (isScalar(node)) return { kind: "scalar", value: node.value, line: lineOf(node) };
    return { kind: "scalar", value: null, line: lineOf(node) };
  };
  const converted = doc.contents === null ? undefined : convert(doc.contents);
  return problems.length > 0 ? { doc: undefined, problems } : { doc: converted, problems };
}

/** Converts a located value back to plain data (for labels). */
export function plain(node: Located): unknown {
  switch (node.kind) {
    case "scalar":
      return node.value;
    case "seq":
      return node.items.map(plain);
    case "map":
      return Object.fromEntries(node.entries.map((e) => [e.key, plain(e.value)]));
  }
}
