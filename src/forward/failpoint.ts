/**
 * Deterministic fault points for the fault tests: `KWOLLECTOR_FAILPOINT=<name>@<n>` kills the
 * process with SIGKILL the n-th time execution reaches `failpoint(<name>)`; `<name>@<n>:stop`
 * stops it with SIGSTOP instead, frozen at that point until the test cuts its network and kills
 * it (a power loss: the server never hears from it again). Without the variable (production) a
 * failpoint costs one comparison.
 */
const spec = /^([a-z-]+)@(\d+)(:stop)?$/.exec(Deno.env.get("KWOLLECTOR_FAILPOINT") ?? "");
let remaining = spec ? Number(spec[2]) : 0;

export function failpoint(name: string): void {
  if (!spec || spec[1] !== name) return;
  if (--remaining === 0) Deno.kill(Deno.pid, spec[3] ? "SIGSTOP" : "SIGKILL");
}

/** Whether `failpoint(name)` can fire in this process (a fault test armed it). */
export function failpointArmed(name: string): boolean {
  return spec?.[1] === name;
}
