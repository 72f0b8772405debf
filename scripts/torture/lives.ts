/**
 * What a torture scenario reads in the lives of its collector processes: the values each life
 * served, how it ended, what it logged, and how well the exporter's polls kept their period.
 */
import type { CountingExporter } from "../peers/prometheus_exporter.ts";

/** One run of the collector process: the values served while it ran, and how it ended. */
export interface Life {
  /** First and last value served while this process ran. */
  first: number;
  last: number;
  stop: "SIGTERM" | "SIGKILL";
  /** The process logged a failing poll (a timeout on a loaded machine loses that poll's value). */
  pollFailed: boolean;
}

/**
 * Missing values no fault explains. A SIGKILL may lose the poll in flight and the samples waiting
 * for the next group commit: at most `tail` values at the end of the life. A SIGTERM stop commits
 * its in-flight polls, so it may lose none. A failing poll loses its own value.
 */
export function unexplainedMissing(missing: number[], lives: Life[], tail = 3): number[] {
  const set = new Set(missing);
  return missing.filter((v) => {
    const life = lives.find((l) => v >= l.first && v <= l.last);
    if (!life) return true;
    if (life.pollFailed) return false;
    if (life.stop === "SIGTERM") return true;
    // Within the tail: every value from v to the end of the life must be missing too.
    if (life.last - v >= tail) return true;
    for (let w = v; w <= life.last; w++) if (!set.has(w)) return true;
    return false;
  });
}

export function pollFailed(lines: string[]): boolean {
  return lines.some((l) => /Device poll failing/.test(l));
}

/** A SIGKILL cannot damage a SQLite spool in WAL mode: a salvage after one is a bug. */
export function spoolSalvaged(lines: string[]): boolean {
  return lines.some((l) => /Spool is damaged/.test(l));
}

/** Log lines of a collector that report a condition no fault here should cause. */
export function unexpectedLogLines(lines: string[]): string[] {
  return lines.filter((l) =>
    /Unexpected|Samples lost|Spool is damaged|Spool full|panicked|Uncaught/.test(l) ||
    /^(ERROR|CRITICAL) /.test(l) && !/Central database refuses/.test(l)
  );
}

/**
 * How well the exporter's polls kept their period between values `from` and `to`: the longest
 * gap between two polls, and the share of gaps within `toleranceMs` of the period.
 */
export function scheduleOf(
  exporter: CountingExporter,
  range: { from: number; to: number; periodMs: number; toleranceMs: number },
): { polls: number; longestGapMs: number; onTime: number } {
  let longest = 0;
  let onTime = 0;
  let gaps = 0;
  for (let v = range.from + 1; v <= range.to; v++) {
    const a = exporter.servedAt(v - 1);
    const b = exporter.servedAt(v);
    if (!a || !b) continue;
    const gap = b.monoMs - a.monoMs;
    longest = Math.max(longest, gap);
    gaps++;
    if (Math.abs(gap - range.periodMs) <= range.toleranceMs) onTime++;
  }
  return { polls: range.to - range.from + 1, longestGapMs: Math.round(longest), onTime: gaps ? onTime / gaps : 0 };
}
