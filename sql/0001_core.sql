-- 0001_core: the Kwollect metrics table, promoted_metrics, the api schema, and the delivery
-- ledger that makes forwarding exactly-once.
--
-- Applied by `kwollector setup-db`, as the administrator, in one transaction, with these
-- settings: kwollect.user and kwollect.user_ro (role names), kwollect.timescaledb ('on' when the
-- TimescaleDB extension is installed in this database). Never edited once shipped: changes go in
-- a new numbered file.

CREATE TABLE IF NOT EXISTS metrics (
  "timestamp" timestamptz NOT NULL DEFAULT now(),
  device_id text NOT NULL,
  metric_id text NOT NULL,
  value double precision DEFAULT 'NaN',
  labels jsonb DEFAULT '{}'
);

DO $$
BEGIN
  IF current_setting('kwollect.timescaledb') = 'on' THEN
    -- Kwollect's hypertable; the chunk interval and compression policy are (re)applied by
    -- settings.sql on every setup-db run, so they can be changed later.
    PERFORM create_hypertable('metrics', 'timestamp', chunk_time_interval => interval '6 hours',
                              if_not_exists => true, migrate_data => true);
    ALTER TABLE metrics SET (timescaledb.compress,
                             timescaledb.compress_segmentby = 'device_id, metric_id, labels',
                             timescaledb.compress_orderby = 'timestamp DESC');
  ELSE
    -- Plain PostgreSQL: a BRIN index serves time ranges over the append-mostly table at a tiny
    -- fraction of a btree's size.
    CREATE INDEX IF NOT EXISTS metrics_timestamp_brin ON metrics USING brin ("timestamp");
  END IF;
END $$;

CREATE INDEX IF NOT EXISTS metrics_device_idx ON metrics (device_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS metrics_alias_idx ON metrics ((labels->>'_device_alias'), "timestamp" DESC)
  WHERE labels ? '_device_alias';

-- Optional metrics are collected only while a row here matches (metric_id is a regular
-- expression, NULL matches every metric).
CREATE TABLE IF NOT EXISTS promoted_metrics (
  device_id text NOT NULL,
  metric_id text DEFAULT NULL
);

-- PostgREST's db-schema.
CREATE SCHEMA IF NOT EXISTS api;

-- The delivery ledger: one row per batch a collector committed (or gave up), in the same
-- transaction as the batch's rows. Per spool, the ranges [first_seq, last_seq] never overlap and,
-- once a spool is drained, tile 1..N: a hole is a missing batch (kwollect_ledger_gaps).
CREATE TABLE IF NOT EXISTS kwollect_ledger (
  spool_id uuid NOT NULL,
  edge_id text NOT NULL,
  first_seq bigint NOT NULL,
  last_seq bigint NOT NULL,
  rows integer NOT NULL,
  kind text NOT NULL CHECK (kind IN ('data', 'dropped', 'quarantined')),
  min_ts timestamptz,
  max_ts timestamptz,
  collector_version text,
  committed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (spool_id, first_seq),
  CHECK (last_seq >= first_seq),
  CHECK (rows >= 0)
);
CREATE INDEX IF NOT EXISTS kwollect_ledger_last_seq ON kwollect_ledger (spool_id, last_seq);

-- Claims a seq range for the current transaction. Returns false, claiming nothing, when any part
-- of the range is already in the ledger: the batch (or part of it) was committed before, e.g. by
-- an attempt whose acknowledgement was lost. The advisory lock serialises claims of one spool.
CREATE OR REPLACE FUNCTION kwollect_claim(p_spool uuid, p_edge text, p_first bigint, p_last bigint,
                                          p_rows integer, p_kind text, p_min_ts timestamptz,
                                          p_max_ts timestamptz, p_version text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_spool::text, 0));
  IF EXISTS (SELECT 1 FROM kwollect_ledger
             WHERE spool_id = p_spool AND last_seq >= p_first AND first_seq <= p_last) THEN
    RETURN false;
  END IF;
  INSERT INTO kwollect_ledger (spool_id, edge_id, first_seq, last_seq, rows, kind, min_ts, max_ts,
                               collector_version)
  VALUES (p_spool, p_edge, p_first, p_last, p_rows, p_kind, p_min_ts, p_max_ts, p_version);
  RETURN true;
END $$;

-- Seq ranges missing between the batches of each spool. During an outage the newest batches may
-- arrive first (live lane), so a gap is final only once the collector reports an empty spool.
CREATE OR REPLACE VIEW kwollect_ledger_gaps AS
SELECT spool_id, edge_id, first_missing_seq, last_missing_seq
FROM (
  SELECT spool_id, edge_id,
         coalesce(lag(last_seq) OVER w, 0) + 1 AS first_missing_seq,
         first_seq - 1 AS last_missing_seq
  FROM kwollect_ledger
  WINDOW w AS (PARTITION BY spool_id ORDER BY first_seq)
) g
WHERE last_missing_seq >= first_missing_seq;

-- One line per collector spool: what arrived, what was set aside, when.
CREATE OR REPLACE VIEW kwollect_delivery AS
SELECT spool_id, max(edge_id) AS edge_id, count(*) AS batches,
       sum(rows) FILTER (WHERE kind = 'data') AS rows,
       sum(last_seq - first_seq + 1) FILTER (WHERE kind = 'quarantined') AS quarantined,
       sum(last_seq - first_seq + 1) FILTER (WHERE kind = 'dropped') AS dropped,
       max(last_seq) AS last_seq, max(committed_at) AS last_commit_at
FROM kwollect_ledger GROUP BY spool_id;

DO $$
DECLARE
  u text := current_setting('kwollect.user');
  ro text := current_setting('kwollect.user_ro');
BEGIN
  EXECUTE format('GRANT SELECT, INSERT ON metrics TO %I', u);
  EXECUTE format('GRANT SELECT ON metrics TO %I', ro);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON promoted_metrics TO %I', u);
  EXECUTE format('GRANT SELECT ON promoted_metrics TO %I', ro);
  EXECUTE format('GRANT SELECT, INSERT ON kwollect_ledger TO %I', u);
  EXECUTE format('GRANT SELECT ON kwollect_ledger_gaps, kwollect_delivery TO %I', u);
  EXECUTE format('GRANT EXECUTE ON FUNCTION kwollect_claim(uuid, text, bigint, bigint, integer, text, timestamptz, timestamptz, text) TO %I', u);
  EXECUTE format('GRANT USAGE ON SCHEMA api TO %I, %I', u, ro);
  REVOKE EXECUTE ON FUNCTION kwollect_claim(uuid, text, bigint, bigint, integer, text, timestamptz, timestamptz, text) FROM PUBLIC;
END $$;
