// The central schema, embedded in the program (text imports are part of the module graph, so
// `deno compile` carries them and nothing is read from disk at run time). Every file of sql/
// named NNNN_*.sql must be listed here, in order; a test checks it.
import m0001 from "../../sql/0001_core.sql" with { type: "text" };
import m0002 from "../../sql/0002_views_summary.sql" with { type: "text" };
import m0003 from "../../sql/0003_api.sql" with { type: "text" };
import m0004 from "../../sql/0004_kwollect_compat.sql" with { type: "text" };
import adoptKwollect from "../../sql/adopt_kwollect.sql" with { type: "text" };
import settings from "../../sql/settings.sql" with { type: "text" };

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "0001_core", sql: m0001 },
  { version: 2, name: "0002_views_summary", sql: m0002 },
  { version: 3, name: "0003_api", sql: m0003 },
  { version: 4, name: "0004_kwollect_compat", sql: m0004 },
];

/**
 * Run before the numbered migrations, in their transaction, on a Kwollect 1.x database (a
 * `metrics` table and no recorded migration): moves Kwollect's objects out of their way.
 */
export const ADOPT_KWOLLECT_SQL: string = adoptKwollect;

/** Idempotent statements re-applied on every setup-db run. */
export const SETTINGS_SQL: string = settings;
