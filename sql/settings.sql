-- Settings re-applied on every `kwollector setup-db` run (idempotent, not a migration), so that
-- changing an option and running setup-db again takes effect. Available settings:
-- kwollect.user, kwollect.user_ro, kwollect.db_name, kwollect.timescaledb,
-- kwollect.chunk_interval_hour, kwollect.chunk_compress_hour, kwollect.request_timeout_min.

DO $$
DECLARE
  u text := current_setting('kwollect.user');
  ro text := current_setting('kwollect.user_ro');
  db text := current_setting('kwollect.db_name');
  timeout_min int := current_setting('kwollect.request_timeout_min')::int;
BEGIN
  -- Kwollect hard-coded these for a database named kwdb whatever its name; use the real one.
  EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L', db, '1h');
  EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', db, '1h');
  -- API requests run as these roles (PostgREST switches role per request).
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', u, db, timeout_min || 'min');
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', ro, db, timeout_min || 'min');

  IF current_setting('kwollect.timescaledb') = 'on' THEN
    PERFORM set_chunk_time_interval('metrics',
      make_interval(hours => current_setting('kwollect.chunk_interval_hour')::int));
    PERFORM remove_compression_policy('metrics', if_exists => true);
    PERFORM add_compression_policy('metrics',
      make_interval(hours => current_setting('kwollect.chunk_compress_hour')::int));
  END IF;
END $$;
