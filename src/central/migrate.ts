import type postgres from "postgres";
import type { Sql } from "./connect.ts";
import { ADOPT_KWOLLECT_SQL, type Migration, MIGRATIONS, SETTINGS_SQL } from "./migrations.ts";

/**
 * Applies the numbered, forward-only migrations that are not yet recorded in
 * kwollect_schema_migrations, each in its own transaction together with its record, then the
 * settings. An applied migration whose text changed is refused: shipped files are never edited.
 *
 * A Kwollect 1.x database (a `metrics` table, no recorded migration) is upgraded in place in ONE
 * transaction: sql/adopt_kwollect.sql, then every migration and its record. Per-migration
 * transactions would leave it, after a failure half-way, neither Kwollect's nor ours (Kwollect's
 * api gone, ours not there yet); in one transaction a failure leaves it exactly as Kwollect left
 * it, still served by Kwollect's api.
 */
export interface MigrationResult {
  applied: string[];
  alreadyApplied: string[];
  /** The database was built by Kwollect 1.x and has been upgraded in place by this run. */
  adoptedKwollect: boolean;
}

export async function migrate(
  sql: Sql,
  settings: Record<string, string>,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<MigrationResult> {
  checkSequence(migrations);
  await sql`SELECT pg_advisory_lock(hashtext('kwollect_schema_migrations'))`;
  try {
    const [found] = await sql<{ ledger: boolean; metrics: boolean }[]>`
      SELECT to_regclass('public.kwollect_schema_migrations') IS NOT NULL AS ledger,
             to_regclass('public.metrics') IS NOT NULL AS metrics`;
    const done = new Map(
      (found?.ledger
        ? await sql<{ version: number; name: string; checksum: string }[]>`
            SELECT version, name, checksum FROM kwollect_schema_migrations`
        : []).map((r) => [r.version, r]),
    );
    const result: MigrationResult = { applied: [], alreadyApplied: [], adoptedKwollect: false };
    const pending: { migration: Migration; checksum: string }[] = [];
    for (const m of migrations) {
      const checksum = await sha256(m.sql);
      const prior = done.get(m.version);
      if (!prior) {
        pending.push({ migration: m, checksum });
        continue;
      }
      if (prior.checksum !== checksum) {
        throw new Error(
          `Migration ${m.name} differs from the one applied on ${prior.name}: migrations are never edited once shipped`,
        );
      }
      result.alreadyApplied.push(m.name);
    }

    if (done.size === 0 && found?.metrics) {
      await sql.begin(async (tx) => {
        await createLedger(tx);
        await applySettings(tx, settings);
        await tx.unsafe(ADOPT_KWOLLECT_SQL);
        for (const { migration, checksum } of pending) {
          await tx.unsafe(migration.sql);
          await record(tx, migration, checksum);
        }
      }).catch((err: Error) => {
        throw new Error(
          `Cannot upgrade this Kwollect database in place: ${
            describe(err)
          }. Nothing was changed (the upgrade runs in one transaction)`,
          { cause: err },
        );
      });
      result.applied.push(...pending.map((p) => p.migration.name));
      result.adoptedKwollect = true;
    } else {
      await createLedger(sql);
      for (const { migration, checksum } of pending) {
        await sql.begin(async (tx) => {
          await applySettings(tx, settings);
          await tx.unsafe(migration.sql);
          await record(tx, migration, checksum);
        }).catch((err: Error) => {
          const last = result.applied.at(-1) ?? result.alreadyApplied.at(-1);
          throw new Error(
            `Migration ${migration.name} failed: ${describe(err)}. It was rolled back; the schema stays at ${
              last ?? "no migration"
            }`,
            { cause: err },
          );
        });
        result.applied.push(migration.name);
      }
    }
    await sql.begin(async (tx) => {
      await applySettings(tx, settings);
      await tx.unsafe(SETTINGS_SQL);
    });
    return result;
  } finally {
    await sql`SELECT pg_advisory_unlock(hashtext('kwollect_schema_migrations'))`;
  }
}

async function createLedger(tx: Sql | postgres.TransactionSql): Promise<void> {
  await tx`CREATE TABLE IF NOT EXISTS kwollect_schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())`;
}

async function record(tx: postgres.TransactionSql, m: Migration, checksum: string): Promise<void> {
  await tx`INSERT INTO kwollect_schema_migrations (version, name, checksum)
           VALUES (${m.version}, ${m.name}, ${checksum})`;
}

/** A PostgreSQL error with its detail and hint, which name the objects involved. */
function describe(err: Error): string {
  const e = err as Error & { detail?: string; hint?: string };
  return [e.message, e.detail, e.hint].filter((part) => part).join(" ");
}

/** Makes the options visible to the SQL as current_setting('kwollect.<key>'), for this transaction. */
async function applySettings(tx: Sql | postgres.TransactionSql, settings: Record<string, string>): Promise<void> {
  for (const [key, value] of Object.entries(settings)) {
    await tx`SELECT set_config(${`kwollect.${key}`}, ${value}, true)`;
  }
}

function checkSequence(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`Migration ${m.name} has version ${m.version}, expected ${i + 1}`);
  });
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
