import { isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Problem } from "./errors.ts";

/** A YAML value with the line it starts on, so validation errors can point at it. */
export type Located =
  | { kind: "scalar"; value: unknown; line: number }
  | { kind: "map"; entries: { key: string; keyLine: number; value: Located }[]; line: number }
  | { kind: "seq"; items: Located[]; line: number };

/**
 * Parses YAML text into located values. Syntax errors are returned as problems with their
 * line; the document is then undefined.
 */
export function parseLocatedYaml(
  text: string,
  file: string,
): { doc: Located | undefined; problems: Problem[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    return {
      doc: undefined,
      problems: doc.errors.map((e) => ({
        file,
        line: lineCounter.linePos(e.pos[0]).line,
        message: `Invalid YAML: ${e.message.split("\n")[0]}`,
      })),
    };
  }
  const lineOf = (node: unknown): number => {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return range ? lineCounter.linePos(range[0]).line : 1;
  };
  const convert = (node: unknown): Located => {
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
  return { doc: doc.contents === null ? undefined : convert(doc.contents), problems: [] };
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
