/**
 * Power loss in the middle of a batch (issue 11, item 4): the collector runs in a network
 * namespace (scripts/peers/netns.ts) and stops itself at a failpoint inside a batch's central
 * transaction, after the claim took the spool's ledger lock: either between two statements
 * (`before-commit`: its backend idles in the transaction) or inside COPY (`mid-copy`: its backend
 * waits for data). The test then cuts the namespace's link, kills the collector and deletes the
 * namespace: the server never hears a FIN, and its backend keeps the lock. A new collector
 * starts on the same spool in a new namespace, with a new address (as after a reboot that
 * changed nothing on the central side), and must:
 *
 * - resume delivery within a minute of the power loss: the server drops the orphan by itself
 *   (idle_in_transaction_session_timeout between statements, TCP keepalives inside COPY: see
 *   src/forward/session.ts), which pg.log must show;
 * - wait for the lock without piling up backends: while the orphan lives, at most the orphan and
 *   one backend of the new collector (live or backfill connection), at most one of them waiting
 *   on a lock; once it is gone, at most the live connection and `forward_pipeline_batches`
 *   backfill connections. The orphan is the backend holding the spool's ledger lock, not one
 *   holding only a fleet backfill slot (both are advisory locks). And at the power loss no other
 *   backend of the stopped collector waits behind its own batch's lock (they would wait on
 *   beside the orphan: the live lane claimed first, before its COPY, until that was found here);
 *   when a rule breaks, a note lists every forwarder backend seen then;
 * - and not take the wait for a slow database: the restarted collector's backlog grows past
 *   several batches while it waits (BATCH_ROWS is small against the 100 samples/s polled), so
 *   each restart drains a backlog through the pipelined backfill after the wait (the case that
 *   once paused the backfill for as long as the wait and kept delivery stalled);
 * - log the wait as a lock held by another session, never as an unreachable database;
 * - and in the end every committed sample is central exactly once.
 */
import { LOCK_CLASS } from "../../src/forward/fleet_slots.ts";
import { finalDrain, sleep, spoolRows } from "../harness/collector.ts";
import { createPrivateNetwork, type Edge } from "../peers/netns.ts";
import type { PgCluster } from "../peers/postgres.ts";
import { deliveryCounts } from "./delivery_check.ts";
import { type Life, pollFailed, unexpectedLogLines } from "./lives.ts";
import { TortureRun } from "./run.ts";
import type { ScenarioResult, ScenarioSize } from "./scenario.ts";

const SERIES = 10;
/** Small batches: 15 s of polling (the shortest wait for an orphan) fill more than 7 of them. */
const BATCH_ROWS = 200;
const PIPELINE_BATCHES = 2;
const RESUME_WITHIN_MS = 60_000;
const POINTS = ["before-commit", "mid-copy"] as const;
/** How pg.log says the server dropped the orphan, per failpoint. */
const FREED_BY: Record<(typeof POINTS)[number], RegExp> = {
  "before-commit": /terminating connection due to idle-in-transaction timeout/g,
  "mid-copy": /could not receive data from client: Connection timed out/g,
};

async function isStopped(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat.slice(stat.lastIndexOf(")") + 2).startsWith("T");
}

interface Backend {
  pid: number;
  client: string | null;
  application: string;
  /** Seconds since its transaction began, or null outside one. */
  transactionS: number | null;
  query: string;
  /** Waiting for an advisory lock: the spool's ledger lock, held by the orphan. */
  waiting: boolean;
  /** Waiting for another heavyweight lock, e.g. to extend `metrics` beside the collector's other COPYs. */
  waitingOther: boolean;
  /** Holds the spool's ledger lock (a one-key advisory lock): the orphan, once its collector is gone. */
  ledger: boolean;
  /** Holds a fleet backfill slot (a two-key advisory lock, src/forward/fleet_slots.ts). */
  slot: boolean;
}

async function forwarderBackends(pg: PgCluster): Promise<Backend[]> {
  const admin = pg.admin("kwdb");
  try {
    return await admin<Backend[]>`
      SELECT a.pid, host(a.client_addr) AS client, a.application_name AS application,
             round(extract(epoch FROM now() - a.xact_start)::numeric, 1)::float8 AS "transactionS",
             left(regexp_replace(a.query, '[[:space:]]+', ' ', 'g'), 80) AS query,
             a.wait_event_type = 'Lock' AND a.wait_event = 'advisory' AS waiting,
             a.wait_event_type = 'Lock' AND a.wait_event <> 'advisory' AS "waitingOther",
             EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                     AND l.objsubid = 1) AS ledger,
             EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                     AND l.objsubid = 2 AND l.classid = ${LOCK_CLASS}) AS slot
      FROM pg_stat_activity a WHERE a.application_name IN ('kwollector forwarder', 'kwollector backfill')`;
  } finally {
    await admin.end();
  }
}

async function dataCommitsSince(pg: PgCluster, wallMs: number): Promise<number> {
  const admin = pg.admin("kwdb");
  try {
    const [row] = await admin<{ n: number }[]>`
      SELECT count(*)::int AS n FROM kwollect_ledger WHERE kind = 'data' AND committed_at > ${new Date(wallMs)}`;
    return row!.n;
  } finally {
    await admin.end();
  }
}

export async function runOrphanedSession(size: ScenarioSize): Promise<ScenarioResult> {
  await using run = new TortureRun(size, { powerLosses: size.iterations });
  const { random, problems, notes, counts } = run;
  const net = run.own(await createPrivateNetwork(), (net) => net.close());
  const pg = await run.central({ network: { address: net.centralIp, clients: net.edges } });
  const exporter = run.exporter({ series: SERIES, hostname: net.centralIp });
  const rig = await run.rig({
    pg,
    exporter,
    sslmode: "require",
    settings: { db_host: net.centralIp, forward_batch_rows: BATCH_ROWS, forward_pipeline_batches: PIPELINE_BATCHES },
  });
  const lives: Life[] = [];
  const lifeLogs: string[][] = [];
  const unexpected: string[] = [];
  const resumeMs: number[] = [];
  const freedMs: number[] = [];
  const perPoint: Record<string, number> = { "before-commit": 0, "mid-copy": 0 };
  /** The orphan and the new collector's backends while the orphan lived; one collector's at any time. */
  let mostBackends = 0;
  let mostCollectorBackends = 0;
  let mostWaiting = 0;
  let mostWaitingOther = 0;
  /** Backends of the stopped collector waiting on its own batch's ledger lock at the power loss. */
  let mostQueuedBehindOwn = 0;
  let backloggedRestarts = 0;
  const failpointEnv = (i: number): Record<string, string> =>
    i < size.iterations ? { KWOLLECTOR_FAILPOINT: `${POINTS[i % 2]}@${3 + Math.floor(random() * 5)}:stop` } : {};
  let edge: Edge = await net.addEdge();
  let collector = run.collector(rig.config, { netns: edge.name, env: failpointEnv(0) });
  let first = exporter.served() + 1;

  for (let i = 0; i < size.iterations; i++) {
    const point = POINTS[i % 2]!;
    perPoint[point]!++;
    // The collector stops itself inside a batch.
    const pid = await collector.pid();
    let frozen = false;
    for (let waited = 0; waited < 60_000 && !frozen; waited += 50) {
      frozen = await isStopped(pid);
      if (!frozen) await sleep(50);
    }
    if (!frozen) {
      problems.push(`power loss ${i}: the collector never reached failpoint ${point}`);
      break;
    }
    const orphans = (await forwarderBackends(pg)).filter((b) => b.client === edge.ip);
    // The ledger lock's holder, not a backfill batch holding only a fleet slot (also an advisory lock).
    const orphan = orphans.find((b) => b.ledger);
    if (!orphan) {
      problems.push(
        `power loss ${i}: the stopped collector's session holds no ledger lock (${JSON.stringify(orphans)})`,
      );
    }
    // Its other backends do not queue behind its own batch's lock: left so, they wait on beside the orphan.
    const queued = orphans.filter((b) => b.waiting);
    mostQueuedBehindOwn = Math.max(mostQueuedBehindOwn, queued.length);
    if (queued.length > 0) {
      problems.push(
        `power loss ${i}: ${queued.length} backends of the stopped collector waiting on its own batch's ledger lock (${
          JSON.stringify(queued)
        })`,
      );
    }
    // Power loss: nothing leaves the edge any more, then the collector and its kernel state vanish.
    await edge.cut();
    await collector.stop("SIGKILL");
    await edge.remove();
    const lostIp = edge.ip;
    const lostAt = performance.now();
    const lostAtWall = Date.now();
    const logs = collector.logs();
    lifeLogs.push(logs);
    lives.push({ first, last: exporter.served(), stop: "SIGKILL", pollFailed: pollFailed(logs) });
    unexpected.push(...unexpectedLogLines(logs));

    if (await spoolRows(rig.config) > BATCH_ROWS) backloggedRestarts++;
    // The next life, on a new edge.
    edge = await net.addEdge();
    collector = run.collector(rig.config, { netns: edge.name, env: failpointEnv(i + 1) });
    first = exporter.served() + 1;
    let freed: number | undefined;
    let resumed: number | undefined;
    while (performance.now() - lostAt < RESUME_WITHIN_MS * 1.5 && (freed === undefined || resumed === undefined)) {
      const backends = await forwarderBackends(pg);
      const orphanLives = backends.some((b) => b.pid === orphan?.pid);
      // The old life's other connections (idle, or in a batch that holds no lock) go their own way.
      const own = backends.filter((b) => b.client === edge.ip).length;
      const waiting = backends.filter((b) => b.waiting);
      const broken = (waiting.length > 1 && waiting.length > mostWaiting) ||
        (orphanLives && 1 + own > 2 && 1 + own > mostBackends);
      if (orphanLives) mostBackends = Math.max(mostBackends, 1 + own);
      mostCollectorBackends = Math.max(mostCollectorBackends, own);
      if (broken) {
        // Which backends: the evidence a broken rule needs.
        const life = (b: Backend) => b.client === edge.ip ? "new life" : b.client === lostIp ? "lost life" : b.client;
        const seen = backends.map((b) =>
          `${b.pid}${b.pid === orphan?.pid ? " (orphan)" : ""} ${life(b)} ${b.application}` +
          `${b.waiting ? " WAITING" : ""}${b.ledger ? " ledger-lock" : ""}${b.slot ? " slot" : ""}` +
          ` xact ${b.transactionS ?? "-"} s: ${b.query}`
        );
        notes.push(`power loss ${i} (${point}), ${waiting.length} waiting: ${seen.join(" | ")}`);
      }
      mostWaiting = Math.max(mostWaiting, waiting.length);
      mostWaitingOther = Math.max(mostWaitingOther, backends.filter((b) => b.waitingOther).length);
      if (freed === undefined && !orphanLives) freed = performance.now() - lostAt;
      if (resumed === undefined && await dataCommitsSince(pg, lostAtWall) > 0) resumed = performance.now() - lostAt;
      await sleep(200);
    }
    if (freed === undefined) problems.push(`power loss ${i} (${point}): the orphaned session was never dropped`);
    else freedMs.push(freed);
    if (resumed === undefined || resumed > RESUME_WITHIN_MS) {
      problems.push(`power loss ${i} (${point}): delivery did not resume within ${RESUME_WITHIN_MS / 1000} s`);
    }
    if (resumed !== undefined) resumeMs.push(resumed);
  }

  // The last life polls a little more, then stops and the rest is flushed.
  await sleep(2000);
  const lastLogs = collector.logs();
  problems.push(...await finalDrain(collector, rig.config));
  lifeLogs.push(lastLogs);
  lives.push({ first, last: exporter.served(), stop: "SIGTERM", pollFailed: pollFailed(lastLogs) });
  unexpected.push(...unexpectedLogLines(lastLogs));

  // What each restarted collector said while it waited for the orphan's lock.
  let lockWaitsLogged = 0;
  let backlogsDrained = 0;
  for (const [k, logs] of lifeLogs.entries()) {
    if (k === 0) continue;
    if (logs.some((l) => l.includes("Draining the backlog"))) backlogsDrained++;
    if (logs.some((l) => l.includes("Central database lock held by another session"))) lockWaitsLogged++;
    else problems.push(`life ${k} never logged the held lock it waited for`);
    const wrong = logs.filter((l) => /unreachable|did not answer/.test(l));
    if (wrong.length) problems.push(`life ${k} reported a lock wait as an outage: ${wrong[0]}`);
  }
  counts.lockWaitsLogged = lockWaitsLogged;
  const pgLog = await Deno.readTextFile(`${pg.dir}/pg.log`);
  for (const point of POINTS) {
    const seen = pgLog.match(FREED_BY[point])?.length ?? 0;
    counts[`droppedBy.${point === "before-commit" ? "idleInTransactionTimeout" : "keepalive"}`] = seen;
    if (seen < perPoint[point]!) {
      problems.push(
        `${perPoint[point]} power losses at ${point}, pg.log shows ${seen} sessions dropped by ${
          FREED_BY[point].source
        }`,
      );
    }
  }
  // A claim that waited for the orphan's lock and timed out leaves one error, its lock timeout: the
  // batch's COPY sent with the lock's try was ended before the claim waited (batch_writer.ts).
  const abortedCopies = pgLog.match(/ERROR: +current transaction is aborted.*\n.*STATEMENT: +COPY /g)?.length ?? 0;
  counts.lockTimeouts = pgLog.match(/ERROR: +canceling statement due to lock timeout/g)?.length ?? 0;
  counts.copiesAbortedBehindAClaim = abortedCopies;
  if (abortedCopies > 0) problems.push(`${abortedCopies} COPYs refused behind a claim that timed out (pg.log)`);
  const check = await run.checkDelivery(pg, rig.spoolPath, exporter, {
    lives,
    problem: "served values missing with no power loss to explain them",
  });
  if (mostBackends > 2) {
    problems.push(`${mostBackends - 1} backends of the new collector beside the orphan: retries piled up`);
  }
  if (mostCollectorBackends > 1 + PIPELINE_BATCHES) {
    problems.push(`${mostCollectorBackends} forwarder backends of one collector at once`);
  }
  if (mostWaiting > 1) problems.push(`${mostWaiting} forwarder backends waiting on the spool's lock at once`);
  Object.assign(counts, {
    resumeMaxS: Math.round(Math.max(0, ...resumeMs) / 100) / 10,
    orphanDroppedMaxS: Math.round(Math.max(0, ...freedMs) / 100) / 10,
    mostForwarderBackends: mostBackends,
    mostCollectorBackends,
    mostWaitingOnLock: mostWaiting,
    mostWaitingOnOtherLocks: mostWaitingOther,
    mostQueuedBehindOwnLock: mostQueuedBehindOwn,
    backloggedRestarts,
    backlogsDrained,
    ...deliveryCounts(check),
  });
  if (unexpected.length) notes.push(`Unexpected log lines: ${unexpected.slice(0, 5).join(" | ")}`);
  return run.result({
    name: "power loss mid-batch",
    fault: `the collector stopped inside a batch's transaction after its claim (between statements and inside COPY), ` +
      `its network namespace cut and deleted, ${size.iterations} times; a new collector started on the spool`,
    criteria: "delivery resumes within 60 s of each power loss (the server drops the orphaned session), at most one " +
      "backend per collector waiting on the spool's lock, none behind its own batch's lock, the wait logged as a held lock, every committed sample central exactly once",
  });
}
