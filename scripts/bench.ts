/**
 * `deno task bench`: runs each benchmark of scripts/bench/ in its own process (so RSS figures
 * are not mixed) and prints their JSON lines. `--only core` runs one. docs/PERFORMANCE.md holds
 * the figures measured and compares them with the goals.
 */
const only = Deno.args[Deno.args.indexOf("--only") + 1];
const dir = new URL("./bench/", import.meta.url);
const scripts = ["core.ts", "snmp.ts", "modbus_ipmi.ts", "wattmetre.ts"];
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
