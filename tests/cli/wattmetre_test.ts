import assert from "node:assert/strict";
import { setupDatabase } from "../../src/central/setup.ts";
import { destroyPostgres, startPostgres } from "../../scripts/peers/postgres.ts";
import { pgConfig } from "../../scripts/harness/config.ts";
import { kwollector } from "../../scripts/harness/collector.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

/** wattmetre-read lines: debug fields, epoch seconds, OK, one power value per port. */
function stream(seconds: number, ports: number, hz: number, start: number): string {
  const lines: string[] = [];
  for (let i = 0; i < seconds * hz; i++) {
    const t = start + i / hz;
    const values = Array.from({ length: ports }, (_, p) => (100 + p + (i % hz)).toFixed(1));
    lines.push(`0,${i},${t.toFixed(3)},OK,${values.join(",")}`);
  }
  return lines.join("\n") + "\n";
}

Deno.test("wattmetre subcommand accepts a port under two nodes, spools while the database is down, forwards once", async () => {
  // The mapping as Grid'5000's generator writes a shared PSU: port 2 under both nodes it powers.
  const pg = await startPostgres({ timescaledb: false });
  try {
    const dir = await tempDir("kwollector-test-");
    const config = pgConfig(pg, dir);
    await setupDatabase(config);
    const admin = pg.admin("kwdb");
    await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('node-2', 'wattmetre_.*')`;
    await admin`INSERT INTO promoted_metrics (device_id, metric_id) VALUES ('node-4', 'wattmetre_power_watt')`;
    await Deno.writeTextFile(
      `${dir}/mapping.yaml`,
      "# generated\nnode-1: [wattmetre1-port0]\nnode-2: [wattmetre1-port1]\nnode-3: [wattmetre1-port2]\n" +
        "node-4: [wattmetre1-port2]\n",
    );
    const args = [
      "--wattmetre_id",
      "wattmetre1",
      "--mapping_file_path",
      `${dir}/mapping.yaml`,
      "--spool_path",
      config.spool_path,
      "--db_host",
      "127.0.0.1",
      "--db_port",
      String(pg.port),
      "--promoted_refresh_ms",
      "200",
    ];
    const start = 1_790_000_000;
    // First run: promotion known, the database reachable.
    const feed = async (text: string, extra: string[] = []) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL("../../main.ts", import.meta.url).pathname, "wattmetre", ...args, ...extra],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = child.stdin.getWriter();
      await new Promise((r) => setTimeout(r, 1500)); // let the promotion refresh happen
      await w.write(new TextEncoder().encode(text));
      await w.close();
      const out = await child.output();
      return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
    };
    const first = await feed(stream(3, 4, 50, start));
    assert.equal(first.code, 0, first.stderr);
    const shared = first.stderr.split("\n").filter((l) => l.includes("mapped to several nodes"));
    assert.equal(shared.length, 1, first.stderr);
    assert.match(shared[0]!, /^WARNING .*without _device_alias: wattmetre1-port2 \(node-3, node-4\)/);
    // Second run: the central database is down (wrong port); the stream is spooled, not lost.
    const second = await feed(stream(2, 4, 50, start + 3), ["--db_port", "1"]);
    assert.equal(second.code, 0, second.stderr);
    const flush = await kwollector([
      "flush",
      "--spool_path",
      config.spool_path,
      "--db_host",
      "127.0.0.1",
      "--db_port",
      String(pg.port),
    ]);
    assert.equal(flush.code, 0, flush.stderr);
    const rows = await admin<{ device_id: string; n: number; alias: string | null; avg: number }[]>`
      SELECT device_id, count(*)::int AS n, max(labels->>'_device_alias') AS alias, avg(value) AS avg
      FROM metrics WHERE metric_id = 'wattmetre_power_watt' GROUP BY device_id ORDER BY device_id`;
    const by = Object.fromEntries(rows.map((r) => [r.device_id, r]));
    // Ports 0 and 3: one average per second (5 s); port 1 (node-2 promoted): every raw sample;
    // port 2, shared by node-3 and node-4 (promoted): every raw sample, credited to neither.
    assert.equal(by["wattmetre1-port0"]!.n, 5);
    assert.equal(by["wattmetre1-port0"]!.alias, "node-1");
    assert.equal(by["wattmetre1-port3"]!.n, 5);
    assert.equal(by["wattmetre1-port3"]!.alias, null);
    assert.equal(by["wattmetre1-port1"]!.n, 250);
    assert.equal(by["wattmetre1-port2"]!.n, 250);
    assert.equal(by["wattmetre1-port2"]!.alias, null);
    assert.ok(Math.abs(by["wattmetre1-port0"]!.avg - 124.5) < 1e-9, `avg ${by["wattmetre1-port0"]!.avg}`);
    const [dups] =
      await admin`SELECT count(*)::int AS n FROM (SELECT 1 FROM metrics GROUP BY device_id, "timestamp", labels HAVING count(*) > 1) d`;
    assert.equal(dups!.n, 0);
  } finally {
    await destroyPostgres(pg);
  }
});
