/**
 * One JSON line per benchmark figure on stdout. `scripts/bench.ts` collects them, stamps the
 * machine and commit of the run, and publishes them in docs/PERFORMANCE.md.
 */

/** A goal a figure must meet, checked by `goalMet` (never typed by hand). */
export interface Goal {
  op: ">=" | "<=" | "==";
  value: number;
}

export interface Result {
  /** Stable identifier (the key that merges runs in docs/bench-results.json). */
  name: string;
  /** What was measured, in words, with its conditions. */
  figure: string;
  value: number;
  unit: string;
  /** Absent for informational figures and for the raw ceilings measured next to a figure. */
  goal?: Goal;
  [extra: string]: unknown;
}

/**
 * Six significant digits: readable JSON lines, yet precise enough that a goal is never met by
 * rounding (0.99889 stays below 0.999).
 */
function rounded(v: number): number {
  return Number.isInteger(v) ? v : Number(v.toPrecision(6));
}

export function report(r: Result): void {
  // JSON has no NaN: a figure that could not be measured is null.
  console.log(JSON.stringify({ ...r, value: Number.isFinite(r.value) ? rounded(r.value) : null }));
}

export function goalMet(value: number | null, goal: Goal): boolean {
  if (value === null || !Number.isFinite(value)) return false;
  switch (goal.op) {
    case ">=":
      return value >= goal.value;
    case "<=":
      return value <= goal.value;
    case "==":
      return value === goal.value;
  }
}

/** The p-th percentile (0..100) of `values`, nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}
