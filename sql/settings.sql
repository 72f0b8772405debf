-- Settings re-applied on every `kwollector setup-db` run (idempotent, not a migration), so that
-- changing an option and running setup-db again takes effect. Available settings:
-- kwollect.user, kwollect.user_ro, kwollect.db_name, kwollect.timescaledb,
-- kwollect.chunk_interval_hour, kwollect.chunk_compress_hour, kwollect.request_timeout_min, and
-- (read with missing_ok, default off/empty) kwollect.retention_days, kwollect.archive_tablespace
-- (the tablespace at archive_path), kwollect.jobmetrics_requests (a JSON array of {line, request};
-- empty leaves the installed requests as they are), kwollect.api_max_rows (default 1000000) and
-- kwollect.api_anonymous_timeout_s (default 60).

DO $$
DECLARE
  u text := current_setting('kwollect.user');
  ro text := current_setting('kwollect.user_ro');
  db text := current_setting('kwollect.db_name');
  timeout_min int := current_setting('kwollect.request_timeout_min')::int;
  anonymous_timeout text := coalesce(nullif(current_setting('kwollect.api_anonymous_timeout_s', true), ''), '60') || 's';
BEGIN
  -- Kwollect hard-coded these for a database named kwdb whatever its name; use the real one.
  EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L', db, '1h');
  EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', db, '1h');
  -- The Kwollect user's sessions: PostgREST's own (the token's requests run in them), scripts.
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', u, db, timeout_min || 'min');
  -- The read-only role's work is bounded tighter: its own logins (Grafana) get the IN DATABASE
  -- setting, and PostgREST (11 and later) applies the role-wide one, which is the one it reads, to
  -- each anonymous request after switching to the role.
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', ro, db, anonymous_timeout);
  EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', ro, anonymous_timeout);

  IF current_setting('kwollect.timescaledb') = 'on' THEN
    PERFORM set_chunk_time_interval('metrics',
      make_interval(hours => current_setting('kwollect.chunk_interval_hour')::int));
    PERFORM remove_compression_policy('metrics', if_exists => true);
    PERFORM add_compression_policy('metrics',
      make_interval(hours => current_setting('kwollect.chunk_compress_hour')::int));
  END IF;
END $$;

-- The objects of migrations 2 and 3. The guard lets an older migration set run with this file.
DO $$
DECLARE
  timescale boolean := current_setting('kwollect.timescaledb') = 'on';
  keep_days integer := coalesce(nullif(current_setting('kwollect.retention_days', true), ''), '0')::integer;
  archive text := coalesce(current_setting('kwollect.archive_tablespace', true), '');
  requests text := coalesce(current_setting('kwollect.jobmetrics_requests', true), '');
  req record;
  not_numbers text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM kwollect_schema_migrations WHERE version = 3) THEN
    RETURN;
  END IF;
  INSERT INTO kwollect_settings (key, value) VALUES
    ('retention_days', keep_days::text),
    ('api_max_rows', coalesce(nullif(current_setting('kwollect.api_max_rows', true), ''), '1000000')),
    ('kwollect_user', current_setting('kwollect.user'))
  ON CONFLICT (key) DO UPDATE SET value = excluded.value;

  IF timescale THEN
    -- Without retention every late row is re-materialised, however old; with it, only buckets
    -- whose raw rows are still kept (refreshing a dropped range would empty the summary there).
    PERFORM remove_continuous_aggregate_policy('metrics_summary', if_exists => true);
    PERFORM add_continuous_aggregate_policy('metrics_summary',
      start_offset => CASE WHEN keep_days > 0 THEN make_interval(days => keep_days) END,
      end_offset => interval '10 minutes', schedule_interval => interval '5 minutes');
    PERFORM remove_retention_policy('metrics', if_exists => true);
    IF keep_days > 0 THEN
      PERFORM add_retention_policy('metrics', drop_after => make_interval(days => keep_days));
    END IF;
    -- Archiving: daily, chunks older than 8 days (Kwollect's lag), raw rows and summary alike. The
    -- job of an adopted Kwollect database (move_chunks_to_archive, the summary only) gives way to
    -- ours when archive_path is set, and is left as Kwollect left it otherwise.
    PERFORM delete_job(job_id) FROM timescaledb_information.jobs
    WHERE proc_name = 'kwollect_archive_chunks' OR (archive <> '' AND proc_name = 'move_chunks_to_archive');
    IF archive <> '' THEN
      PERFORM add_job('kwollect_archive_chunks', interval '1 day',
                      config => jsonb_build_object('older_than', '8 days', 'tablespace', archive),
                      initial_start => date_trunc('day', now()) + interval '1 day');
    END IF;
  END IF;

  -- get_job_metrics' requests: each must parse over jobmetrics and return numeric columns only.
  IF requests <> '' THEN
    DELETE FROM kwollect_jobmetrics_requests;
    INSERT INTO kwollect_jobmetrics_requests (line, request)
    SELECT (e->>'line')::integer, e->>'request' FROM jsonb_array_elements(requests::jsonb) e;
    FOR req IN SELECT line, request FROM kwollect_jobmetrics_requests ORDER BY line LOOP
      BEGIN
        EXECUTE format('CREATE TEMP VIEW kwollect_jobmetrics_check AS '
                       'WITH jobmetrics AS (SELECT * FROM kwollect_jobmetrics(NULL)) SELECT * FROM (%s) r',
                       req.request);
      EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'jobmetrics request on line %: %', req.line, SQLERRM;
      END;
      SELECT string_agg(format('%I (%s)', attname, format_type(atttypid, atttypmod)), ', ') INTO not_numbers
      FROM pg_attribute
      WHERE attrelid = 'kwollect_jobmetrics_check'::regclass AND attnum > 0
        AND atttypid NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'real'::regtype,
                             'double precision'::regtype, 'numeric'::regtype);
      DROP VIEW kwollect_jobmetrics_check;
      IF not_numbers IS NOT NULL THEN
        RAISE EXCEPTION 'jobmetrics request on line %: columns must be numbers, not %', req.line, not_numbers;
      END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM kwollect_jobmetrics_requests) THEN
      EXECUTE kwollect_jobmetrics_statement() USING NULL::integer;
    END IF;
  END IF;
END $$;
