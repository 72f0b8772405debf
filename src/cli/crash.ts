import { errorMessage, logger, redact } from "../log.ts";

/**
 * Our own bugs surface. An error that nobody handled (a rejected promise nobody awaited, an
 * exception thrown from a timer or a library callback) is a programming error: it is logged
 * CRITICAL with its stack, the hooks registered with `onCrash` run (the spool commits what is
 * queued), and the process exits with code 1, so that systemd restarts it. The spool keeps every
 * acknowledged sample, so a restart loses nothing; retrying a bug under another name, or
 * swallowing it, would hide it for ever.
 *
 * One named exception, for a defect of the postgres.js client that no caller can catch:
 * porsager/postgres#1154 (also #1066, #1208; fixes proposed in #1168 and #1176). When a
 * connection closes while a small write is scheduled with `setImmediate`, `nextWrite()` calls
 * `socket.write()` on a socket that `closed()` has already set to null, and throws
 * "Cannot read properties of null (reading 'write')" from the immediate callback. By then the
 * connection's queries have already failed with CONNECTION_CLOSED through the normal path, so
 * the lost write is moot: that exact error, thrown from postgres.js's `nextWrite`, is logged as
 * a warning and ignored. Anything else is a crash.
 */

const hooks: (() => void)[] = [];
let installed = false;

/** Runs `hook` (synchronous, best effort) before the process exits on a bug. */
export function onCrash(hook: () => void): void {
  hooks.push(hook);
}

export function installCrashHandlers(): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    crash(e.reason);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    const err = e.error ?? new Error(e.message);
    if (isPostgresNullSocketWrite(err)) {
      logger.info("postgres.js wrote to a connection that had just closed (porsager/postgres#1154); ignored", {
        error: errorMessage(err),
      });
      return;
    }
    crash(err);
  });
}

/** The one defect of postgres.js that is ignored: see the module header. */
export function isPostgresNullSocketWrite(err: unknown): boolean {
  return err instanceof TypeError &&
    err.message === "Cannot read properties of null (reading 'write')" &&
    /at (?:\S+\.)?nextWrite \(.*\/postgres\/(?:cjs\/)?src\/connection\.js/.test(err.stack ?? "");
}

/** Logs a bug CRITICAL with its stack, runs the crash hooks, and exits with code 1. */
export function crash(err: unknown): never {
  logger.critical(
    "kwollector bug: an error nobody handled; exiting so that systemd restarts the collector " +
      "(the spool keeps every acknowledged sample)",
    { error: errorMessage(err), stack: stackOf(err) },
  );
  for (const hook of hooks.splice(0)) {
    try {
      hook();
    } catch (hookErr) {
      logger.error("Crash hook failed", { error: errorMessage(hookErr) });
    }
  }
  Deno.exit(1);
}

/** The stack of an error, redacted, on one line (journald keeps one entry per line). */
export function stackOf(err: unknown): string | undefined {
  const stack = err instanceof Error ? err.stack : undefined;
  return stack === undefined ? undefined : redact(stack).split("\n").slice(1, 8).map((l) => l.trim()).join(" | ");
}
