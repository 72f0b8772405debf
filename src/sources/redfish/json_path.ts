/**
 * The JSON paths of `https://…#Temperatures[0].ReadingCelsius` metric URLs: the subset of
 * JSONPath (Kwollect parses them with jsonpath-ng) that picks one value.
 *
 * - keys joined by dots: `PowerControl.PowerConsumedWatts` (a leading `$` or `$.` is accepted);
 * - array indexes: `[0]`, and negative ones counted from the end: `PowerDetail[-1]`;
 * - quoted keys for names with dots or brackets: `Members[0]['@odata.id']`, `Oem."Hpe"`.
 *
 * Wildcards, slices, filters and recursive descent select several values, which a metric entry
 * cannot store, so they are rejected when the path is parsed.
 */

export type PathStep = { key: string } | { index: number };

const SPECIAL = new Set([".", "[", "]", "'", '"']);

/** Parses a path; the error names the path and the character where it goes wrong. */
export function parseJsonPath(text: string): PathStep[] | { error: string } {
  const steps: PathStep[] = [];
  const fail = (at: number, what: string) => ({
    error: `Cannot parse JSON path '${text}' at character ${at + 1}: ${what}`,
  });
  if (text.startsWith("$..")) return fail(1, "recursive descent '..' selects several values");
  let i = 0;
  if (text.startsWith("$")) i = text[1] === "." ? 2 : 1;
  let expectKey = true; // at the start and after a dot
  while (i < text.length) {
    const c = text[i]!;
    if (c === "[") {
      const close = text.indexOf("]", i);
      if (close < 0) return fail(i, "missing ']'");
      const inside = text.slice(i + 1, close).trim();
      const quoted = /^(['"])(.*)\1$/s.exec(inside);
      if (quoted) steps.push({ key: quoted[2]! });
      else if (/^-?\d+$/.test(inside)) steps.push({ index: Number(inside) });
      else if (inside === "*" || inside.includes(":") || inside.startsWith("?")) {
        return fail(i, `'[${inside}]' selects several values; use one index such as [0] or [-1]`);
      } else return fail(i, `expected an index such as [0] or [-1], or a quoted key, found '[${inside}]'`);
      i = close + 1;
      expectKey = false;
    } else if (c === ".") {
      if (expectKey) return fail(i, "empty key");
      if (text[i + 1] === ".") return fail(i, "recursive descent '..' selects several values");
      i++;
      expectKey = true;
      if (i === text.length) return fail(i - 1, "path ends with '.'");
    } else if (c === "'" || c === '"') {
      if (!expectKey) return fail(i, "expected '.' or '[' before a quoted key");
      const close = text.indexOf(c, i + 1);
      if (close < 0) return fail(i, `missing closing ${c}`);
      steps.push({ key: text.slice(i + 1, close) });
      i = close + 1;
      expectKey = false;
    } else {
      if (!expectKey) return fail(i, "expected '.' or '[' between keys");
      let end = i;
      while (end < text.length && !SPECIAL.has(text[end]!)) end++;
      const key = text.slice(i, end);
      if (key === "*") return fail(i, "wildcard '*' selects several values");
      steps.push({ key });
      i = end;
      expectKey = false;
    }
  }
  if (steps.length === 0) return { error: `Empty JSON path '${text}'` };
  return steps;
}

/** Renders steps back as a path, for messages. */
export function formatJsonPath(steps: readonly PathStep[]): string {
  let out = "";
  for (const s of steps) {
    if ("index" in s) out += `[${s.index}]`;
    else if (/^[^.[\]'"]+$/.test(s.key)) out += out === "" ? s.key : `.${s.key}`;
    else out += `[${JSON.stringify(s.key)}]`;
  }
  return out;
}

/** Follows `steps` into `doc`; the error says which step found nothing and what was there. */
export function followJsonPath(doc: unknown, steps: readonly PathStep[]): { value: unknown } | { error: string } {
  let node = doc;
  for (let n = 0; n < steps.length; n++) {
    const step = steps[n]!;
    const at = n === 0 ? "the document" : `'${formatJsonPath(steps.slice(0, n))}'`;
    if ("index" in step) {
      if (!Array.isArray(node)) return { error: `Cannot apply [${step.index}] to ${at}: it is ${kindOf(node)}` };
      const i = step.index < 0 ? node.length + step.index : step.index;
      if (i < 0 || i >= node.length) {
        return { error: `Index [${step.index}] is out of range: ${at} has ${node.length} elements` };
      }
      node = node[i];
    } else {
      if (node === null || typeof node !== "object" || Array.isArray(node)) {
        return { error: `Cannot read key '${step.key}' of ${at}: it is ${kindOf(node)}` };
      }
      if (!Object.hasOwn(node, step.key)) return { error: `No key '${step.key}' in ${at}` };
      node = (node as Record<string, unknown>)[step.key];
    }
  }
  return { value: node };
}

export function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return `an array`;
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}
