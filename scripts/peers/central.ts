/**
 * A test PostgreSQL set up as the central database (`setup-db`, as an operator runs it): what the
 * collector forwards to in the process-level tests, the torture scenarios and the benchmarks.
 */
import { setupDatabase } from "../../src/central/setup.ts";
import { pgConfig } from "../harness/config.ts";
import { destroyPostgres, type PgCluster, type PostgresOptions, startPostgres } from "./postgres.ts";

export async function startCentral(opts: PostgresOptions = {}): Promise<PgCluster> {
  const pg = await startPostgres(opts);
  try {
    const dir = await Deno.makeTempDir({ prefix: "kwollector-setup-" });
    await setupDatabase(pgConfig(pg, dir));
    await Deno.remove(dir, { recursive: true });
    return pg;
  } catch (err) {
    await destroyPostgres(pg);
    throw err;
  }
}
