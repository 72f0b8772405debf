import type postgres from "postgres";
import type { Sql } from "./connect.ts";
import { type Migration, MIGRATIONS, SETTINGS_SQL } from "./migrations.ts";

/**
 * Applies the numbered, forward-only migrations that are not yet recorded in
 * kwollect_schema_migrations, each in its own transaction together with its record, then the
 * settings. An applied migration whose text changed is refused: shipped files are never edited.
 */
export interface MigrationResult {
  applied: string[];
  alreadyApplied: string[];
}

export async function migrate(
  sql: Sql,
  settings: Record<string, string>,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<MigrationResult> {
  checkSequence(migrations);
  await sql`SELECT pg_advisory_lock(hashtext('kwollect_schema_migrations'))`;
  try {
    await sql`CREATE TABLE IF NOT EXISTS kwollect_schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now())`;
    const done = new Map(
      (await sql<{ version: number; name: string; checksum: string }[]>`
        SELECT version, name, checksum FROM kwollect_schema_migrations`).map((r) => [r.version, r]),
    );
    const result: MigrationResult = { applied: [], alreadyApplied: [] };
    for (const m of migrations) {
      const checksum = await sha256(m.sql);
      const prior = done.get(m.version);
      if (prior) {
        if (prior.checksum !== checksum) {
          throw new Error(
            `Migration ${m.name} differs from the one applied on ${prior.name}: migrations are never edited once shipped`,
          );
        }
        result.alreadyApplied.push(m.name);
        continue;
      }
      await sql.begin(async (tx) => {
        await applySettings(tx, settings);
        await tx.unsafe(m.sql);
        await tx`INSERT INTO kwollect_schema_migrations (version, name, checksum)
                 VALUES (${m.version}, ${m.name}, ${checksum})`;
      });
      result.applied.push(m.name);
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
