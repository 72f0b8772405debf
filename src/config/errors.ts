/** A configuration problem with where it was found, so the operator can go straight to it. */
export interface Problem {
  /** The file, or "command line" / "environment" for values given there. */
  file: string;
  line?: number;
  key?: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  const where = p.line !== undefined ? `${p.file}:${p.line}` : p.file;
  return p.key !== undefined ? `${where}: ${p.key}: ${p.message}` : `${where}: ${p.message}`;
}

/** Every problem of a configuration at once; the CLI maps it to exit code 2. */
export class ConfigError extends Error {
  readonly problems: Problem[];
  constructor(problems: Problem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** A usage error (unknown flag, missing argument): exit code 2 as well. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
