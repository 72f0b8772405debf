/**
 * One torture scenario: a fault applied many times against real processes and files, with the
 * counts that prove (or disprove) its pass criteria. `deno task torture` runs every scenario at
 * full size and publishes the results in docs/RELIABILITY.md; the `*_test.ts` files of
 * tests/torture/ run each one at a bounded size in CI.
 */
export interface ScenarioResult {
  /** Short name, e.g. "kill -9 sweep". */
  name: string;
  /** The fault applied, one sentence. */
  fault: string;
  /** The pass criteria, one sentence. */
  criteria: string;
  passed: boolean;
  /** What was counted: samples committed, found central, duplicates, kills, seeds, ... */
  counts: Record<string, number | string>;
  durationMs: number;
  /** Anything an operator should know (a fallback used, a skipped variant with its reason). */
  notes: string[];
}

/** Size knobs: CI passes small values, `deno task torture` large ones. */
export interface ScenarioSize {
  /** Iterations of the fault (kills, seeds, images ...). */
  iterations: number;
  /** Seed of the pseudo-random choices, so a failure can be replayed. */
  seed: number;
}

/** A small, seedable PRNG (mulberry32) so every random choice of a scenario can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The bounded sizes CI runs (the `*_test.ts` files and `deno task torture --quick`), one seed. */
export const CI_SIZES = {
  "kill-sweep": 24,
  "outage-restarts": 6,
  "orphaned-session": 2,
  "slow-central": 4,
  "clock-step": 4,
  "spool-model": 10,
  "crash-images": 30,
  "disk-full": 2,
  "bad-samples": 2,
  "full-at-start": 2,
  "spool-deleted": 3,
  "sighup": 3,
} as const;

export const CI_SEED = 20261125;

export function ciSize(scenario: keyof typeof CI_SIZES): ScenarioSize {
  return { iterations: CI_SIZES[scenario], seed: CI_SEED };
}

/** A scenario's result: passed when it found no problem; each problem leads the notes. */
export function scenarioResult(
  what: { name: string; fault: string; criteria: string },
  found: { problems: string[]; notes: string[]; counts: Record<string, number | string>; startedMs: number },
): ScenarioResult {
  return {
    ...what,
    passed: found.problems.length === 0,
    counts: found.counts,
    durationMs: Math.round(performance.now() - found.startedMs),
    notes: [...found.problems.map((p) => `FAILED: ${p}`), ...found.notes],
  };
}
