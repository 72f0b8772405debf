/**
 * OIDs and Kwollect's OID templates. A template `{{ <oid prefix> == <text> }}` stands for the
 * index of the row whose value under `<oid prefix>` is `<text>`:
 * `1.3.6.1.2.1.1.9.1.4.{{ 1.3.6.1.2.1.1.9.1.3 == The SNMP Management Architecture MIB. }}` becomes
 * `1.3.6.1.2.1.1.9.1.4.1` when a walk of 1.3.6.1.2.1.1.9.1.3 finds that text at
 * 1.3.6.1.2.1.1.9.1.3.1. A template fills whole arcs (one or more) of the OID.
 */

export interface OidTemplate {
  /** The template as written, `{{ ... }}`, for messages. */
  text: string;
  /** The walked prefix, without a leading dot. */
  prefix: string;
  /** The value looked for, trimmed. */
  expected: string;
}

const TEMPLATE_RE = /\{\{(.*?)\}\}/g;
const PLACEHOLDER = "T";
const MAX_ARC = 4294967295;

/** Whether `oid` is a dotted numeric OID (no leading dot) that an agent can be asked for. */
export function isValidOid(oid: string): boolean {
  return oidProblem(oid.split(".")) === undefined;
}

function oidProblem(arcs: string[], placeholderAllowed = false): string | undefined {
  if (arcs.length < 2) return "an OID has at least two arcs";
  for (const arc of arcs) {
    if (placeholderAllowed && arc === PLACEHOLDER) continue;
    if (!/^\d+$/.test(arc)) return `'${arc}' is not a number`;
    if (Number(arc) > MAX_ARC) return `arc ${arc} is above 2^32-1`;
  }
  if (arcs[0] !== PLACEHOLDER && Number(arcs[0]) > 2) return "the first arc is 0, 1 or 2";
  return undefined;
}

/** Splits `oid` (leading dot already removed) into its templates; checks the OID's shape. */
export function parseOidTemplate(oid: string): { templates: OidTemplate[] } | { error: string } {
  const templates: OidTemplate[] = [];
  for (const m of oid.matchAll(TEMPLATE_RE)) {
    const text = m[0];
    const body = m[1] ?? "";
    const eq = body.indexOf("==");
    const prefix = eq < 0 ? "" : body.slice(0, eq).trim().replace(/^\./, "");
    const expected = eq < 0 ? "" : body.slice(eq + 2).trim();
    if (eq < 0 || expected === "") {
      return { error: `Invalid OID template '${text}': expected {{ <oid prefix> == <text> }}` };
    }
    if (!isValidOid(prefix)) return { error: `Invalid OID prefix '${prefix}' in template '${text}'` };
    templates.push({ text, prefix, expected });
  }
  const shape = oid.replace(TEMPLATE_RE, PLACEHOLDER);
  if (shape.includes("{{") || shape.includes("}}")) return { error: `Unclosed OID template in '${oid}'` };
  const problem = oidProblem(shape.split("."), true);
  if (problem !== undefined) return { error: `Invalid OID '${oid}': ${problem}` };
  return { templates };
}

/** The OID with each template replaced by its resolved suffix (same order as the templates). */
export function substituteTemplates(oid: string, suffixes: readonly string[]): string {
  let i = 0;
  return oid.replace(TEMPLATE_RE, () => suffixes[i++] ?? "");
}

/** Key of the walk that resolves a template: templates with the same prefix share one walk. */
export function templateKey(t: OidTemplate): string {
  return `${t.prefix}\u0000${t.expected}`;
}

/**
 * The suffix (after `prefix`) of the first walked OID whose value, as text and trimmed, equals
 * `expected`; undefined when none does.
 */
export function findTemplateSuffix(
  prefix: string,
  walked: readonly { oid: string; text: string }[],
  expected: string,
): string | undefined {
  for (const { oid, text } of walked) {
    if (text.trim() === expected && oid.startsWith(`${prefix}.`)) return oid.slice(prefix.length + 1);
  }
  return undefined;
}
