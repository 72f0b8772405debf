/**
 * `deno task bench`: runs every benchmark script of scripts/bench/ in its own process (so RSS
 * figures are not mixed) and prints their JSON lines. Append `--only core` to run one.
 */
const only = Deno.args[Deno.args.indexOf("--only") + 1];
const dir = new URL("./bench/", import.meta.url);
const scripts = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".ts")).map((e) => e.name).sort();
let failed = 0;
for (const name of scripts) {
  if (Deno.args.includes("--only") && name !== `${only}.ts`) continue;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(name, dir).pathname],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) {
    failed++;
    console.log(JSON.stringify({ name: name.replace(/\.ts$/, ""), error: `exited with ${out.code}` }));
  }
}
Deno.exit(failed > 0 ? 1 : 0);
