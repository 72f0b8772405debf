-- Adopting a Kwollect 1.x database (one built by kwollect-setup-db): run by `kwollector setup-db`
-- once, when the database has a `metrics` table and no recorded migration, in the same
-- transaction as every numbered migration and before them. Not a migration: it only moves out of
-- the way what the migrations would collide with or overwrite, and 0004 puts the site's objects
-- back. Nothing is deleted that holds data.
--
-- - The job scheduler hooks nodetime_by_job, nodetime_per_job and promoted_metrics_job (the
--   site's job definition, whatever its form) become kwollect1_<name>.
-- - The 5-minute summary metrics_summary (Kwollect's continuous aggregate, with its materialised
--   rows and policies, or a view) becomes kwollect1_metrics_summary.
-- - Kwollect's metrics_by_job and metrics_by_job_summary become kwollect1_<name>: their job_id has
--   the type of the site's job definition (bigint with Kwollect's OAR integration), which 0002's
--   views could not replace.
-- - Kwollect's versions of the api functions are dropped: they are code, 0003 and 0004 create
--   ours, and two functions of one name would make every named call ambiguous. A site object
--   that depends on one stops the upgrade, with PostgreSQL's message naming it.
--
-- Sets kwollect.adopting = 'on' for 0004. Settings: kwollect.timescaledb (see 0001).

DO $$
DECLARE
  timescale boolean := current_setting('kwollect.timescaledb') = 'on';
  hook text;
  rel regclass;
  kind "char";
  is_aggregate boolean;
  fn regprocedure;
BEGIN
  FOREACH hook IN ARRAY ARRAY['nodetime_by_job', 'nodetime_per_job', 'promoted_metrics_job', 'metrics_summary',
                              'metrics_by_job', 'metrics_by_job_summary'] LOOP
    rel := to_regclass(format('public.%I', hook));
    CONTINUE WHEN rel IS NULL;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = rel;
    is_aggregate := false;
    IF timescale THEN
      is_aggregate := EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                              WHERE view_schema = 'public' AND view_name = hook);
    END IF;
    EXECUTE format('ALTER %s public.%I RENAME TO %I',
                   CASE WHEN is_aggregate OR kind = 'm' THEN 'MATERIALIZED VIEW'
                        WHEN kind = 'v' THEN 'VIEW'
                        WHEN kind = 'f' THEN 'FOREIGN TABLE'
                        ELSE 'TABLE' END,
                   hook, 'kwollect1_' || hook);
  END LOOP;

  IF to_regnamespace('api') IS NOT NULL THEN
    FOR fn IN
      SELECT p.oid::regprocedure FROM pg_proc p
      WHERE p.pronamespace = 'api'::regnamespace
        AND p.proname IN ('get_metrics', 'available_metrics', 'insert_metrics', 'insert_user_metrics',
                          'get_job_metrics', 'update_promoted_metrics')
    LOOP
      EXECUTE format('DROP ROUTINE %s', fn);
    END LOOP;
  END IF;

  PERFORM set_config('kwollect.adopting', 'on', true);
END $$;
