import type { Problem } from "./errors.ts";
import { type Located, parseLocatedYaml } from "./yaml_file.ts";

/**
 * Parses a YAML file that holds a list (a metrics.d file) one item at a time, so that the memory
 * taken while a file is parsed is that of its largest item, not of the whole file: the YAML
 * library keeps about 15 bytes of syntax tree per byte of text (14 MB for a 1 MB file of 5,000
 * entries, plus as much garbage), a large share of the collector's 64 MB heap.
 *
 * A top-level block sequence, `- name: ...` at column 0 (the form of every Kwollect and
 * Grid'5000 metrics.d file), is split at its item lines and each item is parsed alone, its lines
 * numbered as in the file. Any other shape (a single entry, a flow list, a document marker, a
 * line at column 0 that does not start an item), or an item that does not parse alone (an alias
 * to an anchor of another item), is parsed as one document instead, with the same result and
 * errors as before splitting.
 *
 * Items are counted before anything is parsed: a file with more than `maxItems` is refused
 * without parsing it.
 */
export type ParsedItems =
  | { kind: "items"; items: Located[]; problems: Problem[] }
  | { kind: "too many"; count: number };

const ITEM_START = /^-(?:[ \t\r]|$)/;
const IGNORABLE = /^(?:[ \t\r#]|$)/;

export function parseYamlItems(text: string, file: string, maxItems: number): ParsedItems {
  const starts = itemStarts(text);
  if (starts === undefined) return whole(text, file, maxItems);
  if (starts.length > maxItems) return { kind: "too many", count: starts.length };
  const items: Located[] = [];
  for (let i = 0; i < starts.length; i++) {
    const { offset, line } = starts[i]!;
    const end = starts[i + 1]?.offset ?? text.length;
    const { doc, problems } = parseLocatedYaml(text.slice(offset, end), file, { lineOffset: line - 1 });
    if (problems.length > 0 || doc?.kind !== "seq" || doc.items.length !== 1) return whole(text, file, maxItems);
    items.push(doc.items[0]!);
  }
  return { kind: "items", items, problems: [] };
}

/** Offsets and line numbers of the items of a top-level block sequence; undefined for any other shape. */
function itemStarts(text: string): { offset: number; line: number }[] | undefined {
  const starts: { offset: number; line: number }[] = [];
  let offset = 0;
  let line = 1;
  while (offset < text.length) {
    const newline = text.indexOf("\n", offset);
    const end = newline < 0 ? text.length : newline;
    const content = text.slice(offset, Math.min(end, offset + 2));
    if (ITEM_START.test(content)) starts.push({ offset, line });
    else if (!IGNORABLE.test(content)) return undefined;
    else if (starts.length === 0 && /^[ \t]/.test(content) && text.slice(offset, end).trim() !== "") return undefined;
    offset = end + 1;
    line++;
  }
  return starts.length > 0 ? starts : undefined;
}

function whole(text: string, file: string, maxItems: number): ParsedItems {
  const { doc, problems } = parseLocatedYaml(text, file);
  if (doc === undefined) return { kind: "items", items: [], problems };
  const items = doc.kind === "seq" ? doc.items : [doc];
  if (items.length > maxItems) return { kind: "too many", count: items.length };
  return { kind: "items", items, problems };
}
