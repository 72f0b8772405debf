/** One JSON line per benchmark figure, with the machine and commit it was measured on. */
const commit = new TextDecoder().decode(
  (await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stdout: "piped", stderr: "null" }).output())
    .stdout,
).trim();
const machine = `${Deno.build.os}-${Deno.build.arch} ${navigator.hardwareConcurrency} cores`;

export interface Result {
  name: string;
  value: number;
  unit: string;
  goal?: string;
  [extra: string]: unknown;
}

export function report(r: Result): void {
  console.log(JSON.stringify({ ...r, value: Math.round(r.value * 100) / 100, machine, commit }));
}
