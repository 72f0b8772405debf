-- 0002_views_summary: Kwollect's views over metrics (aliases, jobs), the job-scheduler hooks, the
-- 5-minute summary and the maintenance that keeps it, retention and archiving.
--
-- Settings: kwollect.user, kwollect.user_ro, kwollect.timescaledb (see 0001). Grants are in 0003.
-- Never edited once shipped.

-- Options that scheduled maintenance reads (settings.sql writes them on every setup-db run).
CREATE TABLE IF NOT EXISTS kwollect_settings (key text PRIMARY KEY, value text NOT NULL);

CREATE OR REPLACE FUNCTION kwollect_setting(setting_key text) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT value FROM kwollect_settings WHERE key = setting_key $$;

-- The 5-minute bucket of a timestamp, aligned like TimescaleDB's time_bucket('5 minutes', ts).
CREATE OR REPLACE FUNCTION kwollect_bucket(ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT date_bin('5 minutes', ts, timestamptz '2000-01-01 00:00:00+00') $$;

-- Job scheduler hook (Kwollect README): one row per (job, node); stop_time is NULL while the job
-- runs. Empty until an integration replaces it (kwollector setup-db-oar, or CREATE OR REPLACE VIEW
-- by the operator with these four columns and types).
CREATE OR REPLACE VIEW nodetime_per_job AS
SELECT NULL::integer AS job_id, NULL::timestamptz AS start_time, NULL::timestamptz AS stop_time, NULL::text AS node
WHERE false;

-- Kwollect 1.3 called it nodetime_by_job; kept for queries written against older installations.
CREATE OR REPLACE VIEW nodetime_by_job AS SELECT job_id, start_time, stop_time, node FROM nodetime_per_job;

-- Metrics to promote for running jobs (job_id, node, metric_id regex); filled by an integration
-- (setup-db-oar: OAR jobs of type monitor or monitor=<regex>), read by api.update_promoted_metrics.
CREATE OR REPLACE VIEW promoted_metrics_job AS
SELECT NULL::integer AS job_id, NULL::text AS node, NULL::text AS metric_id WHERE false;

-- Rows with a job_id were added by update_promoted_metrics for that job and are removed when the
-- job ends; rows without one are the operator's and are never touched.
ALTER TABLE promoted_metrics ADD COLUMN IF NOT EXISTS job_id integer;

-- Every row under its own device, plus the rows of devices that carry `_device_alias` summed under
-- the alias per (timestamp, metric, labels), the summed devices listed in `_device_orig`.
CREATE OR REPLACE VIEW metrics_by_device AS
SELECT "timestamp", device_id, metric_id, value, labels - '_device_alias' AS labels
FROM metrics
UNION ALL
SELECT "timestamp", labels->>'_device_alias' AS device_id, metric_id, sum(value) AS value,
       (labels - '_device_alias') || jsonb_build_object('_device_orig', jsonb_agg(device_id ORDER BY device_id)) AS labels
FROM metrics
WHERE labels ? '_device_alias'
GROUP BY "timestamp", labels->>'_device_alias', metric_id, labels - '_device_alias';

-- Metrics of each job's nodes during the job (bounds included, as api.get_metrics).
CREATE OR REPLACE VIEW metrics_by_job AS
SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels, j.start_time, j.stop_time, j.job_id
FROM nodetime_per_job j
JOIN LATERAL (
  SELECT * FROM metrics_by_device m
  WHERE m.device_id = j.node AND m."timestamp" >= j.start_time
    AND (j.stop_time IS NULL OR m."timestamp" <= j.stop_time)
) d ON true;

-- The 5-minute summary: per bucket, device, metric and labels (without `_metric_scrape_time`,
-- which differs between scrapes), MAX of counters (metric ids ending in `_total`) and AVG of the
-- rest. Recent buckets not yet materialised are computed from the raw rows at query time, so the
-- summary is always complete; the refresh only makes it fast.
DO $do$
BEGIN
  IF current_setting('kwollect.timescaledb') = 'on' THEN
    -- A continuous aggregate; its refresh policy (settings.sql) re-materialises buckets whose raw
    -- rows arrived late, e.g. from a collector's spool after an outage.
    CREATE MATERIALIZED VIEW metrics_summary
      WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket('5 minutes', "timestamp") AS "timestamp", device_id, metric_id,
           CASE WHEN metric_id ~ '_total$' THEN max(value) ELSE avg(value) END AS value,
           labels - '_metric_scrape_time' AS labels
    FROM metrics
    GROUP BY 1, device_id, metric_id, labels - '_metric_scrape_time'
    WITH NO DATA;
    CREATE INDEX metrics_summary_alias_idx ON metrics_summary ((labels->>'_device_alias'), "timestamp" DESC)
      WHERE labels ? '_device_alias';

    -- Archiving (archive_path): moves the chunks of metrics (raw rows) and of the summary older
    -- than config.older_than to tablespace config.tablespace, compressed or not. Run daily by a
    -- TimescaleDB job that settings.sql adds when archive_path is set.
    CREATE PROCEDURE kwollect_archive_chunks(job_id integer, config jsonb)
    LANGUAGE plpgsql AS $fn$
    DECLARE
      older_than interval := (config->>'older_than')::interval;
      space name := config->>'tablespace';
      hypertable regclass;
      chunk regclass;
      compressed boolean;
      device_index regclass;
    BEGIN
      IF older_than IS NULL OR space IS NULL THEN
        RAISE EXCEPTION 'kwollect_archive_chunks needs "older_than" and "tablespace" in its config, got %', config;
      END IF;
      FOR hypertable IN
        SELECT 'metrics'::regclass
        UNION ALL
        SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)::regclass
        FROM timescaledb_information.continuous_aggregates WHERE view_name = 'metrics_summary'
      LOOP
        FOR chunk IN
          SELECT c FROM show_chunks(hypertable, older_than => older_than) c
          WHERE NOT EXISTS (SELECT 1 FROM pg_class k JOIN pg_tablespace t ON t.oid = k.reltablespace
                            WHERE k.oid = c AND t.spcname = space)
        LOOP
          -- move_chunk rewrites an uncompressed chunk in the order of an index: its device index.
          SELECT c.is_compressed INTO compressed FROM timescaledb_information.chunks c
          WHERE format('%I.%I', c.chunk_schema, c.chunk_name)::regclass = chunk;
          SELECT i.indexrelid INTO device_index FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = chunk AND a.attname = 'device_id' AND i.indpred IS NULL
          LIMIT 1;
          IF compressed THEN
            PERFORM move_chunk(chunk => chunk, destination_tablespace => space, index_destination_tablespace => space);
          ELSE
            PERFORM move_chunk(chunk => chunk, destination_tablespace => space, index_destination_tablespace => space,
                               reorder_index => device_index);
          END IF;
        END LOOP;
      END LOOP;
    END $fn$;
  ELSE
    -- Plain PostgreSQL: buckets older than the watermark are materialised in
    -- metrics_summary_data; newer ones are aggregated at query time. A statement trigger records
    -- the time range of every insert, so that buckets below the watermark that receive late rows
    -- are recomputed by the next refresh (rows changed by UPDATE or DELETE are not tracked: insert
    -- their range into kwollect_summary_invalidations to have it recomputed).
    CREATE TABLE metrics_summary_data (
      "timestamp" timestamptz NOT NULL,
      device_id text NOT NULL,
      metric_id text NOT NULL,
      value double precision,
      labels jsonb NOT NULL
    );
    CREATE INDEX metrics_summary_data_device_idx ON metrics_summary_data (device_id, "timestamp" DESC);
    CREATE INDEX metrics_summary_data_timestamp_idx ON metrics_summary_data ("timestamp");
    CREATE INDEX metrics_summary_data_alias_idx ON metrics_summary_data ((labels->>'_device_alias'), "timestamp" DESC)
      WHERE labels ? '_device_alias';

    CREATE TABLE kwollect_summary_state (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      watermark timestamptz NOT NULL
    );
    INSERT INTO kwollect_summary_state (watermark) VALUES ('-infinity');

    CREATE TABLE kwollect_summary_invalidations (lo timestamptz NOT NULL, hi timestamptz NOT NULL);

    CREATE FUNCTION kwollect_summary_invalidate() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    BEGIN
      INSERT INTO kwollect_summary_invalidations (lo, hi)
      SELECT min("timestamp"), max("timestamp") FROM inserted HAVING count(*) > 0;
      RETURN NULL;
    END $fn$;
    CREATE TRIGGER metrics_summary_invalidate AFTER INSERT ON metrics
      REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION kwollect_summary_invalidate();

    CREATE VIEW metrics_summary AS
    SELECT "timestamp", device_id, metric_id, value, labels FROM metrics_summary_data
    UNION ALL
    SELECT kwollect_bucket("timestamp") AS "timestamp", device_id, metric_id,
           CASE WHEN metric_id ~ '_total$' THEN max(value) ELSE avg(value) END AS value,
           labels - '_metric_scrape_time' AS labels
    FROM metrics
    WHERE "timestamp" >= (SELECT watermark FROM kwollect_summary_state)
    GROUP BY 1, device_id, metric_id, labels - '_metric_scrape_time';

    -- Materialises the summary up to 10 minutes ago, at most max_step of new data per call (the
    -- rest stays computed at query time, so catching up after a long gap spreads over several
    -- calls), and recomputes the buckets that received late rows. Returns the number of summary
    -- rows written. Called by kwollect_maintenance().
    CREATE FUNCTION kwollect_refresh_summary(max_step interval DEFAULT '6 hours') RETURNS bigint
    LANGUAGE plpgsql AS $fn$
    DECLARE
      old_mark timestamptz;
      from_mark timestamptz;
      new_mark timestamptz;
      keep_days integer := coalesce(kwollect_setting('retention_days')::integer, 0);
      todo tstzmultirange;
      r tstzrange;
      n bigint;
      written bigint := 0;
    BEGIN
      IF NOT pg_try_advisory_xact_lock(hashtext('kwollect_refresh_summary')) THEN
        RETURN 0;  -- another refresh is running
      END IF;
      SELECT watermark INTO old_mark FROM kwollect_summary_state;
      -- New data starts at the first row above the watermark (gaps without rows are skipped).
      SELECT kwollect_bucket(min("timestamp")) INTO from_mark FROM metrics WHERE "timestamp" >= old_mark;
      new_mark := greatest(old_mark, least(kwollect_bucket(now() - interval '10 minutes'), from_mark + max_step));

      -- Late rows: the buckets below the old watermark that an insert touched.
      WITH taken AS (DELETE FROM kwollect_summary_invalidations RETURNING lo, hi)
      SELECT range_agg(tstzrange(kwollect_bucket(lo), least(kwollect_bucket(hi) + interval '5 minutes', old_mark)))
      INTO todo FROM taken WHERE lo < old_mark;
      todo := coalesce(todo, '{}'::tstzmultirange);
      IF from_mark < new_mark THEN
        todo := todo + tstzmultirange(tstzrange(from_mark, new_mark));
      END IF;
      -- Never recompute buckets whose raw rows retention may have deleted.
      IF keep_days > 0 THEN
        todo := todo * tstzmultirange(tstzrange(kwollect_bucket(now() - make_interval(days => keep_days))
                                                + interval '5 minutes', NULL));
      END IF;

      FOR r IN SELECT unnest(todo) LOOP
        DELETE FROM metrics_summary_data WHERE "timestamp" >= lower(r) AND "timestamp" < upper(r);
        INSERT INTO metrics_summary_data ("timestamp", device_id, metric_id, value, labels)
        SELECT kwollect_bucket("timestamp"), device_id, metric_id,
               CASE WHEN metric_id ~ '_total$' THEN max(value) ELSE avg(value) END,
               labels - '_metric_scrape_time'
        FROM metrics
        WHERE "timestamp" >= lower(r) AND "timestamp" < upper(r)
        GROUP BY 1, device_id, metric_id, labels - '_metric_scrape_time';
        GET DIAGNOSTICS n = ROW_COUNT;
        written := written + n;
      END LOOP;
      UPDATE kwollect_summary_state SET watermark = new_mark;
      RETURN written;
    END $fn$;

    -- retention_days on plain PostgreSQL: deletes raw rows older than that, but only those already
    -- materialised in the summary. Returns the number of rows deleted.
    CREATE FUNCTION kwollect_apply_retention() RETURNS bigint
    LANGUAGE plpgsql AS $fn$
    DECLARE
      keep_days integer := coalesce(kwollect_setting('retention_days')::integer, 0);
      n bigint;
    BEGIN
      IF keep_days <= 0 THEN
        RETURN 0;
      END IF;
      DELETE FROM metrics
      WHERE "timestamp" < least(now() - make_interval(days => keep_days),
                                (SELECT watermark FROM kwollect_summary_state));
      GET DIAGNOSTICS n = ROW_COUNT;
      RETURN n;
    END $fn$;

    -- What pg_cron (every 5 minutes) or config/kwollect-summary-refresh.timer runs:
    --   SELECT * FROM kwollect_maintenance();
    CREATE FUNCTION kwollect_maintenance(OUT summary_rows bigint, OUT deleted_rows bigint)
    LANGUAGE plpgsql AS $fn$
    BEGIN
      summary_rows := kwollect_refresh_summary();
      deleted_rows := kwollect_apply_retention();
    END $fn$;
  END IF;
END $do$;

-- The same views over the summary.
CREATE OR REPLACE VIEW metrics_by_device_summary AS
SELECT "timestamp", device_id, metric_id, value, labels - '_device_alias' AS labels
FROM metrics_summary
UNION ALL
SELECT "timestamp", labels->>'_device_alias' AS device_id, metric_id, sum(value) AS value,
       (labels - '_device_alias') || jsonb_build_object('_device_orig', jsonb_agg(device_id ORDER BY device_id)) AS labels
FROM metrics_summary
WHERE labels ? '_device_alias'
GROUP BY "timestamp", labels->>'_device_alias', metric_id, labels - '_device_alias';

CREATE OR REPLACE VIEW metrics_by_job_summary AS
SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels, j.start_time, j.stop_time, j.job_id
FROM nodetime_per_job j
JOIN LATERAL (
  SELECT * FROM metrics_by_device_summary m
  WHERE m.device_id = j.node AND m."timestamp" >= kwollect_bucket(j.start_time)
    AND (j.stop_time IS NULL OR m."timestamp" <= j.stop_time)
) d ON true;
