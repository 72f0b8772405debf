/**
 * A slow and refusing central database (reference/store-forward.md (d), tests 6 and 12), against
 * the real collector process:
 *
 * 1. Locks: another session holds `metrics` in ACCESS EXCLUSIVE mode for 1.2 to 3 s, over and
 *    over, while the collector's role has `statement_timeout = 1s`: blocked COPYs are cancelled
 *    (SQLSTATE 57014) and must be retried, never quarantined.
 * 2. Slow statements: a statement trigger on `metrics` sleeps 0 to 2 s, so about half of the
 *    statements run into the timeout.
 * 3. Refused rows, from the start to the end: a CHECK constraint refuses the rows whose value plus
 *    series index is a multiple of 97 (about 1% of rows). Good rows must all land; refused ones
 *    must be quarantined in the spool with the constraint in the reason. A quiet phase (no timeout)
 *    with a backlog measures the attempts per refused row: bisection may try a row once per level
 *    (log2 of the batch, plus the COPY and the first INSERT), never more: no retry storm.
 *
 * Throughout, the exporter's values show whether polling went on: every served value must be
 * central or quarantined, and no gap between two polls may exceed one second.
 */
import { DatabaseSync } from "node:sqlite";
import type { Sql } from "../../src/central/connect.ts";
import { finalDrain, sleep, spoolRows } from "../harness/collector.ts";
import type { CountingExporter } from "../peers/prometheus_exporter.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { pollFailed, unexpectedLogLines } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

const SERIES = 20;
const BATCH_ROWS = 1000;
const CONSTRAINT = "torture_refuse_97";

/** Counters that survive rollbacks (sequences), the sleep knob, and the refusing constraint. */
const FAULT_SQL = `
CREATE SEQUENCE torture_insert_statements;
CREATE SEQUENCE torture_refused_row_attempts;
CREATE TABLE torture_control (sleep_ms integer NOT NULL);
INSERT INTO torture_control VALUES (0);
CREATE FUNCTION torture_statement() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint := nextval('torture_insert_statements');
  ms integer := (SELECT sleep_ms FROM torture_control);
BEGIN
  IF ms > 0 THEN PERFORM pg_sleep((n * 7919 % ms) / 1000.0); END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER torture_statement BEFORE INSERT ON metrics FOR EACH STATEMENT EXECUTE FUNCTION torture_statement();
CREATE FUNCTION torture_refused(value float8, labels jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS
  $$ SELECT mod(value::numeric + coalesce((labels->>'i')::numeric, 0), 97) = 0 $$;
CREATE FUNCTION torture_row() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF torture_refused(NEW.value, NEW.labels) THEN PERFORM nextval('torture_refused_row_attempts'); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER torture_row BEFORE INSERT ON metrics FOR EACH ROW EXECUTE FUNCTION torture_row();
ALTER TABLE metrics ADD CONSTRAINT ${CONSTRAINT} CHECK (NOT torture_refused(value, labels));
`;

function refused(value: number, labels: Record<string, string>): boolean {
  return (value + Number(labels.i ?? 0)) % 97 === 0;
}

async function counter(admin: Sql, sequence: string): Promise<number> {
  const [row] = await admin.unsafe(`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM ${sequence}`);
  return Number(row?.n ?? 0);
}

function quarantined(spoolPath: string): number {
  const db = new DatabaseSync(spoolPath, { readOnly: true });
  try {
    return Number((db.prepare("SELECT count(*) AS n FROM quarantine").get() as { n: number }).n);
  } finally {
    db.close();
  }
}

async function holdLock(admin: Sql, ms: number): Promise<void> {
  await admin.begin(async (tx) => {
    await tx`LOCK TABLE metrics IN ACCESS EXCLUSIVE MODE`;
    await sleep(ms);
  });
}

async function waitDrained(config: string, timeoutMs: number): Promise<boolean> {
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    if (await spoolRows(config) <= SERIES * 5) return true;
    await sleep(200);
  }
  return false;
}

/** Forces the forwarder to reconnect (a role setting applies to new sessions only). */
async function reconnectForwarder(admin: Sql): Promise<void> {
  await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kwollector forwarder'`;
}

/** Longest time between two consecutive polls, in this process' monotonic time. */
function longestPollGapMs(exporter: CountingExporter, from: number): number {
  let longest = 0;
  for (let v = from + 1; v <= exporter.served(); v++) {
    const a = exporter.servedAt(v - 1);
    const b = exporter.servedAt(v);
    if (a && b) longest = Math.max(longest, b.monoMs - a.monoMs);
  }
  return Math.round(longest);
}

export async function runSlowCentral(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size);
  const { random, problems, notes, counts } = run;
  const pg = await run.central();
  const exporter = run.exporter({ series: SERIES });
  const admin = run.own(pg.admin("kwdb"), (admin) => admin.end({ timeout: 1 }).catch(() => {}));
  await admin.unsafe(FAULT_SQL);
  await admin`ALTER ROLE kwuser IN DATABASE kwdb SET statement_timeout = '1s'`;
  const rig = await run.rig({ pg, exporter, settings: { forward_batch_rows: BATCH_ROWS } });
  const collector = run.collector(rig.config);
  while (exporter.served() < 10) await sleep(50);
  const firstPolled = exporter.served();

  // 1. Locks held longer than the statement timeout.
  let phaseStart = performance.now();
  let statements = await counter(admin, "torture_insert_statements");
  for (let i = 0; i < size.iterations; i++) {
    await holdLock(admin, 1200 + random() * 1800);
    await sleep(500 + random() * 1000);
  }
  counts.locks = size.iterations;
  let now = await counter(admin, "torture_insert_statements");
  counts["statementsPerS.locks"] = Math.round((now - statements) / ((performance.now() - phaseStart) / 1000));

  // 2. Statements that sleep up to 2 s, against the 1 s timeout.
  await admin`UPDATE torture_control SET sleep_ms = 2000`;
  phaseStart = performance.now();
  statements = now;
  await sleep(size.iterations * 1000);
  await admin`UPDATE torture_control SET sleep_ms = 0`;
  now = await counter(admin, "torture_insert_statements");
  counts["statementsPerS.slow"] = Math.round((now - statements) / ((performance.now() - phaseStart) / 1000));

  // 3. Quiet: no timeout, a backlog of refused and good rows, attempts per refused row counted.
  await admin`ALTER ROLE kwuser IN DATABASE kwdb RESET statement_timeout`;
  await reconnectForwarder(admin);
  if (!await waitDrained(rig.config, 60_000)) problems.push("the spool did not drain after the slow phases");
  const attempts0 = await counter(admin, "torture_refused_row_attempts");
  const quarantined0 = quarantined(rig.spoolPath);
  await holdLock(admin, 3000 + size.iterations * 200);
  await sleep(3000);
  if (!await waitDrained(rig.config, 60_000)) problems.push("the spool did not drain in the quiet phase");
  const quietAttempts = await counter(admin, "torture_refused_row_attempts") - attempts0;
  const quietQuarantined = quarantined(rig.spoolPath) - quarantined0;
  const perRowBound = Math.ceil(Math.log2(BATCH_ROWS)) + 2;
  if (quietQuarantined === 0) problems.push("no row was refused in the quiet phase");
  if (quietAttempts > quietQuarantined * perRowBound) {
    problems.push(
      `retry storm: ${quietAttempts} attempts at ${quietQuarantined} refused rows (bound ${perRowBound} each)`,
    );
  }

  const maxPollGapMs = longestPollGapMs(exporter, firstPolled);
  const logs = collector.logs();
  problems.push(...await finalDrain(collector, rig.config));

  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, {
    lives: [{ first: 1, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(logs) }],
    problem: "polls never spooled",
  });
  const wrongful = check.quarantine.filter((q) => !refused(q.value, q.labels));
  if (wrongful.length) problems.push(`${wrongful.length} good rows quarantined, e.g. ${JSON.stringify(wrongful[0])}`);
  const noReason = check.quarantine.filter((q) => !q.reason.includes(CONSTRAINT));
  if (noReason.length) problems.push(`${noReason.length} quarantined rows without the constraint in their reason`);
  if (maxPollGapMs > 1000) problems.push(`polling stalled: ${maxPollGapMs} ms between two polls`);
  const pgLog = await Deno.readTextFile(`${pg.dir}/pg.log`);
  const timeouts = pgLog.split("canceling statement due to statement timeout").length - 1;
  if (timeouts === 0) problems.push("no statement ran into the timeout: the slow phases did not bite");
  const unexpected = unexpectedLogLines(logs);
  if (unexpected.length) notes.push(`Unexpected log lines: ${unexpected.slice(0, 5).join(" | ")}`);
  Object.assign(counts, {
    ...deliveryCounts(check),
    statementTimeouts: timeouts,
    refusedRowAttempts: await counter(admin, "torture_refused_row_attempts"),
    insertStatements: await counter(admin, "torture_insert_statements"),
    quietRefusedRows: quietQuarantined,
    quietAttempts,
    quietAttemptsBound: quietQuarantined * perRowBound,
    maxPollGapMs,
  });
  return run.result({
    name: "slow and refusing central database",
    fault: "metrics locked 1.2–3 s at a time and statements sleeping up to 2 s, against a 1 s statement_timeout; " +
      "a CHECK constraint refusing ~1% of rows throughout",
    criteria: "good rows all central exactly once, refused rows quarantined with the reason, bounded attempts per " +
      "refused row, no ledger gap, no poll gap over 1 s",
  });
}
