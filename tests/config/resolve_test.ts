import assert from "node:assert/strict";
import { resolveConfig } from "../../src/config/resolve.ts";
import { ConfigError, formatProblem } from "../../src/config/errors.ts";
import { CONFIG_KEYS, DEFAULTS, type KeySpec, TIMER_MAX_MS } from "../../src/config/defaults.ts";
import { redact } from "../../src/log.ts";
import { tempDir } from "../../scripts/harness/temp_dir.ts";

async function configFile(text: string): Promise<string> {
  const dir = await tempDir("kwollector-test-");
  const path = `${dir}/kwollector.yaml`;
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("resolveConfig() gives Kwollect's defaults when nothing is set", () => {
  const { config } = resolveConfig({ env: {} });
  assert.equal(config.metrics_dir, "/etc/kwollect/metrics.d/");
  assert.equal(config.db_host, "localhost");
  assert.equal(config.db_name, "kwdb");
  assert.equal(config.db_user, "kwuser");
  assert.equal(config.db_password, "changeme");
  assert.equal(config.log_level, "warning");
  assert.equal(config.db_port, 5432);
  assert.equal(config.spool_path, "/var/lib/kwollect/spool.db");
});

Deno.test("resolveConfig() applies flag over environment over file over default", async () => {
  const file = await configFile("db_host: from-file\ndb_name: filedb\ndb_user: fileuser\n");
  const { config, origin } = resolveConfig({
    file,
    env: { KWOLLECT_DB_HOST: "from-env", KWOLLECT_DB_NAME: "envdb" },
    flags: { "db-host": "from-flag" },
  });
  assert.equal(config.db_host, "from-flag");
  assert.equal(config.db_name, "envdb");
  assert.equal(config.db_user, "fileuser");
  assert.equal(config.db_password, "changeme");
  assert.equal(origin.db_host, "command line");
});

Deno.test("resolveConfig() reads an unchanged Kwollect kwollector.yaml", async () => {
  const file = await configFile(
    "# Path to directory containing metrics description\nmetrics_dir: /etc/kwollect/metrics.d/\n" +
      "db_host: localhost \ndb_name: kwdb\ndb_user: kwuser\ndb_password: changeme\nlog_level: warning\n",
  );
  const { config } = resolveConfig({ file, env: {} });
  assert.equal(config.db_host, "localhost");
  assert.equal(config.log_level, "warning");
});

Deno.test("resolveConfig() reports every problem at once with file, line and key", async () => {
  const file = await configFile("db_host: x\ndb_prot: 5432\ndb_port: many\nlog_level: loud\n");
  try {
    resolveConfig({ file, env: {}, flags: { spool_max_bytes: "-1" } });
    assert.fail("expected a ConfigError");
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    const text = err.message;
    assert.match(text, new RegExp(`${file}:2: db_prot: Unknown key`));
    assert.match(text, new RegExp(`${file}:3: db_port: Invalid value "many"`));
    assert.match(text, new RegExp(`${file}:4: log_level: Invalid value "loud"`));
    assert.match(text, /command line: spool_max_bytes: Invalid value "-1"/);
    assert.equal(err.problems.length, 4);
  }
});

Deno.test("resolveConfig() reports invalid YAML with its line", async () => {
  const file = await configFile("db_host: a\ndb_name: [unclosed\n");
  assert.throws(
    () => resolveConfig({ file, env: {} }),
    (err: Error) => err instanceof ConfigError && /:\d+: Invalid YAML/.test(err.message),
  );
});

Deno.test("resolveConfig() derives setup-db names from the collector's keys", () => {
  const { config } = resolveConfig({
    env: {},
    flags: { db_name: "metricsdb", db_user: "collector", db_password: "pw123" },
  });
  assert.equal(config.kwollect_db_name, "metricsdb");
  assert.equal(config.kwollect_user, "collector");
  assert.equal(config.kwollect_password, "pw123");
});

Deno.test("resolveConfig() registers passwords so logs redact them", () => {
  resolveConfig({ env: {}, flags: { db_password: "hunter2-secret" } });
  assert.equal(redact("auth failed for hunter2-secret"), "auth failed for ***");
});

Deno.test("every duration key has an upper bound a timer can hold", () => {
  const durations = CONFIG_KEYS.filter((k) => /_ms$/.test(k));
  assert.ok(durations.length >= 8, durations.join(", "));
  for (const key of durations) {
    const spec: KeySpec = DEFAULTS[key];
    assert.ok(spec.max !== undefined && spec.max <= TIMER_MAX_MS, `${key} has no bound a timer can hold`);
  }
});

Deno.test("resolveConfig() refuses a duration beyond 2^31-1 ms with file, line and key", async () => {
  const dir = await tempDir("kwollector-test-");
  const file = `${dir}/kwollector.yaml`;
  await Deno.writeTextFile(file, "db_host: db\npoll_timeout_ms: 2592000000\ntelemetry_interval_ms: 2147483647\n");
  assert.throws(() => resolveConfig({ file, env: {} }), (err: ConfigError) => {
    assert.deepEqual(err.problems.map(formatProblem), [
      `${file}:2: poll_timeout_ms: Invalid value "2592000000": must be at most 2147483647 ms (about 24.8 days), ` +
      "the longest delay a timer can hold",
    ]);
    return true;
  });
  assert.throws(
    () => resolveConfig({ flags: { "forward-retry-max-ms": "3000000000" }, env: {} }),
    /command line: forward_retry_max_ms: Invalid value "3000000000": must be at most 2147483647 ms/,
  );
});
