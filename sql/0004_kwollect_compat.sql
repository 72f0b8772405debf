-- 0004_kwollect_compat: the api answers Kwollect's callers as Kwollect did, and a Kwollect 1.x
-- database adopted by setup-db (sql/adopt_kwollect.sql) gets its own objects back.
--
-- 1. Adopted database only: the site's job definition is the source of jobs again (a site-defined
--    nodetime_by_job keeps its name and object, nodetime_per_job reads it; a site-defined
--    nodetime_per_job keeps its query; a site-defined promoted_metrics_job keeps its name and
--    object); Kwollect's continuous aggregate metrics_summary is adopted with its materialised
--    rows when it computes what ours does, otherwise ours replaces it; the Kwollect user loses
--    the rights kwollector's model does not give it.
-- 2. Every database: get_metrics takes Kwollect's parameters in Kwollect's order; job node names
--    are cut at the first dot before they are matched with device ids (OAR lists FQDNs); readers
--    other than the Kwollect user get at most api_max_rows rows from one get_metrics call; one
--    function per api name; the Kwollect user owns none of Kwollect's objects (its password is on
--    every collector, and an owner can rewrite history).
--
-- Settings: kwollect.user, kwollect.user_ro, kwollect.timescaledb (see 0001), kwollect.adopting
-- ('on' when sql/adopt_kwollect.sql ran in this transaction; read with missing_ok). Never edited
-- once shipped.

-- Whether a job hook is Kwollect's empty placeholder (a view that reads no relation and returns no
-- row), which the site never replaced.
CREATE FUNCTION pg_temp.kwollect_placeholder(rel regclass) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  found_row boolean;
BEGIN
  IF (SELECT relkind FROM pg_class WHERE oid = rel) <> 'v' OR EXISTS (
    SELECT 1 FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    WHERE r.ev_class = rel AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rel) THEN
    RETURN false;
  END IF;
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', rel) INTO found_row;
  RETURN NOT found_row;
END $$;

-- ALTER <kind> of a relation, for dynamic statements.
CREATE FUNCTION pg_temp.kwollect_relation_kind(rel regclass) RETURNS text
LANGUAGE sql AS $$
  SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END
  FROM pg_class c WHERE c.oid = rel
$$;

-- 1. The adopted database's own objects.
DO $do$
DECLARE
  u text := current_setting('kwollect.user');
  ro text := current_setting('kwollect.user_ro');
  timescale boolean := current_setting('kwollect.timescaledb') = 'on';
  hook text;
  site regclass;
  site_by_job boolean := false;
  kept boolean;
  old_aggregate boolean;
  compress_after interval;
BEGIN
  IF coalesce(current_setting('kwollect.adopting', true), '') <> 'on' THEN
    RETURN;
  END IF;

  -- Kwollect's job views, replaced by 0002's; kept only for site objects that read them.
  FOREACH hook IN ARRAY ARRAY['kwollect1_metrics_by_job_summary', 'kwollect1_metrics_by_job'] LOOP
    CONTINUE WHEN to_regclass(format('public.%I', hook)) IS NULL;
    BEGIN
      EXECUTE format('DROP VIEW %I', hook);
    EXCEPTION WHEN dependent_objects_still_exist THEN
      RAISE NOTICE '% is kept: other objects read it', hook;
    END;
  END LOOP;

  -- nodetime_by_job (Kwollect 1.3's hook): any relation, kept as it is under its name; nothing of
  -- ours depends on the alias 0002 made in its place.
  site := to_regclass('public.kwollect1_nodetime_by_job');
  IF site IS NOT NULL THEN
    IF pg_temp.kwollect_placeholder(site) THEN
      DROP VIEW kwollect1_nodetime_by_job;
    ELSE
      DROP VIEW nodetime_by_job;
      EXECUTE format('ALTER %s kwollect1_nodetime_by_job RENAME TO nodetime_by_job', pg_temp.kwollect_relation_kind(site));
      site_by_job := true;
    END IF;
  END IF;

  -- nodetime_per_job (the 1.8 README's hook): our views read it, so the site's query takes the
  -- place of ours under its name. It must be a view, as the README asks.
  site := to_regclass('public.kwollect1_nodetime_per_job');
  IF site IS NOT NULL AND pg_temp.kwollect_placeholder(site) THEN
    DROP VIEW kwollect1_nodetime_per_job;
  ELSIF site IS NOT NULL THEN
    IF (SELECT relkind FROM pg_class WHERE oid = site) <> 'v' THEN
      RAISE EXCEPTION 'nodetime_per_job is a % and not a view: kwollector reads jobs from a view with columns job_id, start_time, stop_time, node', pg_temp.kwollect_relation_kind(site)
        USING HINT = 'Rename it, define nodetime_per_job as a view over it, and run setup-db again';
    END IF;
    EXECUTE format('CREATE OR REPLACE VIEW nodetime_per_job AS '
                   'SELECT s.job_id::integer AS job_id, s.start_time::timestamptz AS start_time, '
                   's.stop_time::timestamptz AS stop_time, s.node::text AS node FROM (%s) s',
                   rtrim(pg_get_viewdef(site), '; ' || chr(10)));
    BEGIN
      DROP VIEW kwollect1_nodetime_per_job;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      RAISE NOTICE 'kwollect1_nodetime_per_job is kept: other objects read it';
    END;
  ELSIF site_by_job THEN
    CREATE OR REPLACE VIEW nodetime_per_job AS
    SELECT s.job_id::integer AS job_id, s.start_time::timestamptz AS start_time,
           s.stop_time::timestamptz AS stop_time, s.node::text AS node
    FROM nodetime_by_job s;
  END IF;

  -- promoted_metrics_job (Kwollect's OAR integration): read by name only, kept as it is.
  site := to_regclass('public.kwollect1_promoted_metrics_job');
  IF site IS NOT NULL THEN
    IF pg_temp.kwollect_placeholder(site) THEN
      DROP VIEW kwollect1_promoted_metrics_job;
    ELSE
      DROP VIEW promoted_metrics_job;
      EXECUTE format('ALTER %s kwollect1_promoted_metrics_job RENAME TO promoted_metrics_job',
                     pg_temp.kwollect_relation_kind(site));
    END IF;
  END IF;

  -- The summary. Kwollect's continuous aggregate is kept, with its materialised rows, when it
  -- computes exactly what 0002's does (Kwollect 1.3: MAX of counters, AVG of the rest); ours
  -- (created WITH NO DATA and real-time, so complete from the first query) replaces any other
  -- (Kwollect 1.2's AVG of everything, a view) and the refresh policy materialises it again.
  site := to_regclass('public.kwollect1_metrics_summary');
  IF site IS NOT NULL THEN
    kept := false;
    old_aggregate := false;
    IF timescale THEN
      old_aggregate := EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                               WHERE view_schema = 'public' AND view_name = 'kwollect1_metrics_summary');
      kept := coalesce((
        SELECT old.view_definition = ours.view_definition AND old.finalized
        FROM timescaledb_information.continuous_aggregates old, timescaledb_information.continuous_aggregates ours
        WHERE old.view_schema = 'public' AND old.view_name = 'kwollect1_metrics_summary'
          AND ours.view_schema = 'public' AND ours.view_name = 'metrics_summary'), false);
    END IF;
    IF kept THEN
      ALTER MATERIALIZED VIEW metrics_summary RENAME TO kwollect_unused_summary;
      ALTER MATERIALIZED VIEW kwollect1_metrics_summary RENAME TO metrics_summary;
      -- The same view as 0002's, now over the adopted aggregate (metrics_by_job_summary reads
      -- this view, not the aggregate).
      CREATE OR REPLACE VIEW metrics_by_device_summary AS
      SELECT "timestamp", device_id, metric_id, value, labels - '_device_alias' AS labels
      FROM metrics_summary
      UNION ALL
      SELECT "timestamp", labels->>'_device_alias' AS device_id, metric_id, sum(value) AS value,
             (labels - '_device_alias') || jsonb_build_object('_device_orig', jsonb_agg(device_id ORDER BY device_id)) AS labels
      FROM metrics_summary
      WHERE labels ? '_device_alias'
      GROUP BY "timestamp", labels->>'_device_alias', metric_id, labels - '_device_alias';
      DROP MATERIALIZED VIEW kwollect_unused_summary;
      ALTER MATERIALIZED VIEW metrics_summary SET (timescaledb.materialized_only = false);
      CREATE INDEX IF NOT EXISTS metrics_summary_alias_idx ON metrics_summary ((labels->>'_device_alias'), "timestamp" DESC)
        WHERE labels ? '_device_alias';
      -- Jobs run as their owner: Kwollect's compression policy of the summary (1.3.1: 2 days)
      -- is made again by the administrator, who owns the aggregate from now on. The refresh
      -- policy is replaced by settings.sql.
      SELECT (j.config->>'compress_after')::interval INTO compress_after
      FROM timescaledb_information.jobs j
      WHERE j.proc_name = 'policy_compression' AND j.hypertable_name = (
        SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = 'public' AND view_name = 'metrics_summary');
      IF compress_after IS NOT NULL THEN
        PERFORM remove_compression_policy('metrics_summary');
        EXECUTE format('ALTER MATERIALIZED VIEW metrics_summary OWNER TO %I', current_user);
        PERFORM add_compression_policy('metrics_summary', compress_after);
      END IF;
    ELSE
      EXECUTE format('DROP %s kwollect1_metrics_summary',
                     CASE WHEN old_aggregate THEN 'MATERIALIZED VIEW' ELSE pg_temp.kwollect_relation_kind(site) END);
    END IF;
  END IF;

  -- kwollect-setup-db gave the Kwollect user every right on the database and on schema api
  -- (creating schemas and api functions), and PostgreSQL before 15 let everyone create tables in
  -- public; kwollector's roles only read, insert and call the api.
  EXECUTE format('REVOKE CREATE ON DATABASE %I FROM %I', current_database(), u);
  EXECUTE format('REVOKE CREATE ON SCHEMA api FROM %I, %I', u, ro);
  EXECUTE format('REVOKE CREATE ON SCHEMA public FROM PUBLIC, %I, %I', u, ro);
END $do$;

-- 2. Every database.

-- Metrics of each job's nodes during the job (bounds included, as api.get_metrics); nodes given
-- as FQDNs match their host name.
CREATE OR REPLACE VIEW metrics_by_job AS
SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels, j.start_time, j.stop_time, j.job_id
FROM nodetime_per_job j
JOIN LATERAL (
  SELECT * FROM metrics_by_device m
  WHERE m.device_id = split_part(btrim(j.node), '.', 1) AND m."timestamp" >= j.start_time
    AND (j.stop_time IS NULL OR m."timestamp" <= j.stop_time)
) d ON true;

CREATE OR REPLACE VIEW metrics_by_job_summary AS
SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels, j.start_time, j.stop_time, j.job_id
FROM nodetime_per_job j
JOIN LATERAL (
  SELECT * FROM metrics_by_device_summary m
  WHERE m.device_id = split_part(btrim(j.node), '.', 1) AND m."timestamp" >= kwollect_bucket(j.start_time)
    AND (j.stop_time IS NULL OR m."timestamp" <= j.stop_time)
) d ON true;

-- Kwollect's signature: get_metrics(job_id, nodes, devices, metrics, start_time, end_time,
-- summary, as_rate), so that positional calls written for Kwollect work. as_rate is text, not
-- Kwollect 1.3's boolean, because it also takes 'auto' (as Kwollect 1.8 does): a positional call
-- passes it quoted ('true', '1', 'auto').
DROP FUNCTION IF EXISTS api.get_metrics(text, text, text, text, text, integer, boolean, text);

-- Rows that get_metrics would read, counted up to cap + 1 (the raw rows of the alias sums count
-- one by one: that is the work).
CREATE OR REPLACE FUNCTION kwollect_count_metrics(devices text[], metric_ids text[], t_start timestamptz,
                                                  t_end timestamptz, from_summary boolean, cap bigint)
RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT count(*) FROM (
    SELECT 1 FROM metrics m
    WHERE NOT from_summary AND m.device_id = ANY (devices) AND m."timestamp" BETWEEN t_start AND t_end
      AND (metric_ids IS NULL OR m.metric_id = ANY (metric_ids))
    UNION ALL
    SELECT 1 FROM metrics m
    WHERE NOT from_summary AND m.labels ? '_device_alias' AND m.labels->>'_device_alias' = ANY (devices)
      AND m."timestamp" BETWEEN t_start AND t_end AND (metric_ids IS NULL OR m.metric_id = ANY (metric_ids))
    UNION ALL
    SELECT 1 FROM metrics_summary m
    WHERE from_summary AND m.device_id = ANY (devices) AND m."timestamp" BETWEEN t_start AND t_end
      AND (metric_ids IS NULL OR m.metric_id = ANY (metric_ids))
    UNION ALL
    SELECT 1 FROM metrics_summary m
    WHERE from_summary AND m.labels ? '_device_alias' AND m.labels->>'_device_alias' = ANY (devices)
      AND m."timestamp" BETWEEN t_start AND t_end AND (metric_ids IS NULL OR m.metric_id = ANY (metric_ids))
    LIMIT cap + 1
  ) c
$$;

CREATE FUNCTION api.get_metrics(job_id integer DEFAULT NULL, nodes text DEFAULT NULL, devices text DEFAULT NULL,
                                metrics text DEFAULT NULL, start_time text DEFAULT NULL, end_time text DEFAULT NULL,
                                summary boolean DEFAULT false, as_rate text DEFAULT 'false')
RETURNS SETOF metrics
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
  device_list text[] := kwollect_device_list(concat_ws(',', get_metrics.nodes, get_metrics.devices));
  metric_list text[] := kwollect_name_list(get_metrics.metrics);
  t_start timestamptz := kwollect_parse_time('start_time', get_metrics.start_time);
  t_end timestamptz := kwollect_parse_time('end_time', get_metrics.end_time);
  from_summary boolean := coalesce(get_metrics.summary, false);
  max_rows bigint := coalesce(nullif(kwollect_setting('api_max_rows'), '')::bigint, 0);
  writer text := kwollect_setting('kwollect_user');
  rate_mode text;
  job_start timestamptz;
  job_end timestamptz;
  job_nodes text[];
BEGIN
  -- Every spelling of Kwollect 1.3's boolean as_rate (PostgreSQL's: 1, true, yes, on, t, ...), and
  -- Kwollect 1.8's auto.
  IF lower(btrim(coalesce(get_metrics.as_rate, ''))) IN ('', 'auto') THEN
    rate_mode := CASE WHEN btrim(coalesce(get_metrics.as_rate, '')) = '' THEN 'none' ELSE 'auto' END;
  ELSE
    BEGIN
      rate_mode := CASE WHEN get_metrics.as_rate::boolean THEN 'all' ELSE 'none' END;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'Invalid as_rate ''%'': expected 1, true, auto, 0 or false', get_metrics.as_rate
        USING ERRCODE = '22023';
    END;
  END IF;

  IF get_metrics.job_id IS NOT NULL THEN
    -- Node names as the device list: FQDNs cut at the first dot, like the caller's list.
    SELECT min(n.start_time), CASE WHEN bool_or(n.stop_time IS NULL) THEN now() ELSE max(n.stop_time) END,
           kwollect_device_list(string_agg(n.node, ','))
    INTO job_start, job_end, job_nodes
    FROM nodetime_per_job n WHERE n.job_id = get_metrics.job_id;
    IF job_end IS NULL THEN
      RAISE EXCEPTION 'Unknown job_id %: no such job in nodetime_per_job', get_metrics.job_id USING ERRCODE = 'P0002';
    END IF;
    -- The job fills only what the caller left out.
    IF cardinality(device_list) = 0 THEN
      device_list := job_nodes;
    END IF;
    t_start := coalesce(t_start, job_start);
    t_end := coalesce(t_end, job_end);
  ELSIF cardinality(device_list) = 0 THEN
    RAISE EXCEPTION 'Missing ''devices'', ''nodes'' or ''job_id'' argument' USING ERRCODE = '22023';
  END IF;

  -- Kwollect's default windows: five minutes after start, before end, or before now.
  IF t_start IS NULL AND t_end IS NULL THEN
    t_end := now();
    t_start := t_end - interval '5 minutes';
  ELSIF t_end IS NULL THEN
    t_end := t_start + interval '5 minutes';
  ELSIF t_start IS NULL THEN
    t_start := t_end - interval '5 minutes';
  END IF;
  IF t_start > t_end THEN
    RAISE EXCEPTION 'start_time % is after end_time %', t_start, t_end USING ERRCODE = '22023';
  END IF;

  BEGIN
    -- Readers (the anonymous role, Grafana) get at most api_max_rows rows: counted first, up to
    -- one more, so that a request over years stops here instead of reading them all.
    IF max_rows > 0 AND NOT pg_has_role(current_user, coalesce(writer, current_user), 'MEMBER')
       AND kwollect_count_metrics(device_list, metric_list, t_start, t_end, from_summary, max_rows) > max_rows THEN
      RAISE EXCEPTION 'Too much data: more than % rows match this request', max_rows
        USING ERRCODE = '54000',
              HINT = 'Ask for a shorter time range, fewer devices or metrics, or summary=true';
    END IF;

    IF rate_mode = 'none' THEN
      RETURN QUERY
      SELECT s."timestamp", s.device_id, s.metric_id, s.value, s.labels
      FROM kwollect_select_metrics(device_list, metric_list, t_start, t_end, from_summary) s
      ORDER BY s."timestamp", s.device_id, s.metric_id;
    ELSE
      RETURN QUERY
      SELECT s."timestamp", s.device_id, s.metric_id,
             CASE WHEN rate_mode = 'auto' AND s.metric_id !~ '_total$' THEN s.value
                  ELSE kwollect_rate(s.value, lag(s.value) OVER w,
                                     extract(epoch FROM s."timestamp" - lag(s."timestamp") OVER w)::double precision)
             END,
             s.labels
      FROM kwollect_select_metrics(device_list, metric_list, t_start, t_end, from_summary) s
      WINDOW w AS (PARTITION BY s.device_id, s.metric_id, s.labels ORDER BY s."timestamp")
      ORDER BY s."timestamp", s.device_id, s.metric_id;
    END IF;
  EXCEPTION WHEN query_canceled THEN
    RAISE EXCEPTION 'Request timeout, too much data to process'
      USING ERRCODE = '57014',
            HINT = 'Ask for a shorter time range, fewer devices or metrics, or summary=true';
  END;
END $$;

-- What Grafana lists: the (device, metric) pairs seen in the minute before `at`, for the devices
-- of params.devices (a JSON array) or of the job params.job_id (digits; the job's end caps `at`;
-- its node names cut at the first dot).
CREATE OR REPLACE FUNCTION api.available_metrics("at" timestamptz DEFAULT now(), params jsonb DEFAULT '{}')
RETURNS TABLE (device_id text, metric_id text)
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
  p jsonb := coalesce(available_metrics.params, '{}');
  seen_at timestamptz := coalesce(available_metrics."at", now());
  device_list text[];
  job_end timestamptz;
BEGIN
  -- GET /rpc/available_metrics?params={...} passes the object as a JSON string.
  IF jsonb_typeof(p) = 'string' THEN
    BEGIN
      p := (p #>> '{}')::jsonb;
    EXCEPTION WHEN data_exception THEN
      p := NULL;
    END;
  END IF;
  IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION 'Cannot parse params, should be a JSON object' USING ERRCODE = '22023';
  END IF;
  IF p->>'job_id' ~ '^\d{1,9}$' THEN
    SELECT kwollect_device_list(string_agg(n.node, ',')),
           CASE WHEN bool_or(n.stop_time IS NULL) THEN now() ELSE max(n.stop_time) END
    INTO device_list, job_end
    FROM nodetime_per_job n WHERE n.job_id = (p->>'job_id')::integer;
    IF job_end IS NULL THEN
      RETURN;
    END IF;
    seen_at := least(seen_at, job_end);
  ELSIF p ? 'devices' THEN
    IF jsonb_typeof(p->'devices') <> 'array' THEN
      RAISE EXCEPTION 'Cannot parse params->devices, should be JSON array' USING ERRCODE = '22023';
    END IF;
    device_list := ARRAY(SELECT jsonb_array_elements_text(p->'devices'));
  END IF;

  RETURN QUERY
  SELECT a.device_id, a.metric_id
  FROM (
    SELECT m.device_id, m.metric_id FROM metrics m
    WHERE m."timestamp" > seen_at - interval '1 minute' AND m."timestamp" < seen_at
      AND (device_list IS NULL OR m.device_id = ANY (device_list))
    UNION
    SELECT m.labels->>'_device_alias', m.metric_id FROM metrics m
    WHERE m.labels ? '_device_alias' AND m."timestamp" > seen_at - interval '1 minute' AND m."timestamp" < seen_at
      AND (device_list IS NULL OR m.labels->>'_device_alias' = ANY (device_list))
  ) a
  -- Natural order: "cluster-N" nodes first, by cluster then N, then every other device.
  ORDER BY a.device_id !~ '^[a-z]+-\d+$', split_part(a.device_id, '-', 1),
           nullif(regexp_replace(split_part(a.device_id, '-', 2), '\D', '', 'g'), '')::numeric NULLS LAST,
           a.device_id, a.metric_id;
END $$;

-- insert_user_metrics as in 0003, the caller's node matched with job nodes given as FQDNs too.
CREATE OR REPLACE FUNCTION api.insert_user_metrics(jsonb)
RETURNS SETOF metrics
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  headers jsonb := nullif(current_setting('request.headers', true), '')::jsonb;
  client text := headers->>'x-kwollect-client';
  caller_node text;
  job_start timestamptz;
  bad record;
BEGIN
  IF headers->>'x-kwollect-proxy-key' IS NULL
     OR headers->>'x-kwollect-proxy-key' IS DISTINCT FROM (SELECT value FROM kwollect_proxy_key) THEN
    RAISE EXCEPTION 'insert_user_metrics is only available through the Kwollect reverse proxy'
      USING ERRCODE = '42501';
  END IF;
  IF client IS NULL OR btrim(client) = '' THEN
    RAISE EXCEPTION 'insert_user_metrics: the proxy did not say who the client is (X-Kwollect-Client)'
      USING ERRCODE = '42501';
  END IF;
  IF client ~ '^[0-9A-Fa-f:.]+$' THEN
    BEGIN
      SELECT a.node INTO caller_node FROM kwollect_node_addresses a WHERE a.address = client::inet;
    EXCEPTION WHEN data_exception THEN
      caller_node := NULL;
    END;
    IF caller_node IS NULL THEN
      RAISE EXCEPTION 'insert_user_metrics: address % is not a known node (kwollect_node_addresses)', client
        USING ERRCODE = '42501';
    END IF;
  ELSE
    caller_node := split_part(btrim(client), '.', 1);
  END IF;

  SELECT min(n.start_time) INTO job_start FROM nodetime_per_job n
  WHERE split_part(btrim(n.node), '.', 1) = caller_node AND n.stop_time IS NULL AND n.start_time <= now();
  IF job_start IS NULL THEN
    RAISE EXCEPTION 'insert_user_metrics: node % is not in a running job', caller_node USING ERRCODE = '42501';
  END IF;

  SELECT r.* INTO bad FROM kwollect_metric_rows($1, 'insert_user_metrics', caller_node) r
  WHERE r."timestamp" < job_start OR r."timestamp" > now() + interval '1 minute'
     OR EXISTS (SELECT 1 FROM jsonb_object_keys(r.labels) k WHERE k LIKE '\_device\_%')
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'insert_user_metrics: metric % at % with labels %: timestamps must lie between the job''s start (%) and now, and labels may not start with _device_',
      bad.metric_id, bad."timestamp", bad.labels, job_start USING ERRCODE = '42501';
  END IF;

  RETURN QUERY
  INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
  SELECT r."timestamp", r.device_id, r.metric_id, r.value, r.labels
  FROM kwollect_metric_rows($1, 'insert_user_metrics', caller_node) r
  RETURNING *;
END $$;

-- One function per api name: other overloads of our names (left by a Kwollect installation that
-- an earlier kwollector upgraded) make every named call ambiguous, in SQL and in PostgREST.
-- Functions of other names are the site's and stay.
DO $$
DECLARE
  fn regprocedure;
BEGIN
  FOR fn IN
    SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'api'::regnamespace
      AND p.proname IN ('get_metrics', 'available_metrics', 'insert_metrics', 'insert_user_metrics',
                        'get_job_metrics', 'update_promoted_metrics')
      AND p.oid NOT IN ('api.get_metrics(integer, text, text, text, text, text, boolean, text)'::regprocedure,
                        'api.available_metrics(timestamptz, jsonb)'::regprocedure,
                        'api.insert_metrics(jsonb)'::regprocedure,
                        'api.insert_user_metrics(jsonb)'::regprocedure,
                        'api.get_job_metrics(integer)'::regprocedure,
                        'api.update_promoted_metrics()'::regprocedure)
  LOOP
    EXECUTE format('DROP ROUTINE %s', fn);
  END LOOP;
END $$;

-- Ownership and grants. Kwollect made its user the owner of everything; the administrator owns
-- Kwollect's objects now (insert_user_metrics alone runs as the Kwollect user, see 0003). The
-- site's own objects, job hooks included, keep their owner: they may read other databases
-- through that owner's user mappings.
DO $$
DECLARE
  u text := current_setting('kwollect.user');
  ro text := current_setting('kwollect.user_ro');
  timescale boolean := current_setting('kwollect.timescaledb') = 'on';
  r record;
BEGIN
  FOR r IN
    SELECT c.relname, c.relkind FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relowner = u::regrole
      AND c.relname IN ('metrics', 'promoted_metrics', 'metrics_summary', 'metrics_by_device', 'metrics_by_job',
                        'metrics_by_device_summary', 'metrics_by_job_summary')
  LOOP
    EXECUTE format('ALTER %s %I OWNER TO %I',
                   CASE WHEN r.relname = 'metrics_summary' AND timescale THEN 'MATERIALIZED VIEW'
                        WHEN r.relkind = 'v' THEN 'VIEW' ELSE 'TABLE' END,
                   r.relname, current_user);
  END LOOP;
  FOR r IN
    SELECT p.oid::regprocedure AS fn FROM pg_proc p
    WHERE p.pronamespace = 'api'::regnamespace AND p.proowner = u::regrole
      AND p.oid <> 'api.insert_user_metrics(jsonb)'::regprocedure
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.fn, current_user);
  END LOOP;

  -- A new owner takes over the old owner's rights: the grants of 0001 and 0003 again.
  EXECUTE format('GRANT SELECT, INSERT ON metrics TO %I', u);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON promoted_metrics TO %I', u);
  EXECUTE format('GRANT SELECT ON metrics, promoted_metrics, metrics_by_device TO %I', ro);

  REVOKE ALL ON FUNCTION api.get_metrics(integer, text, text, text, text, text, boolean, text) FROM PUBLIC;
  EXECUTE format('GRANT EXECUTE ON FUNCTION api.get_metrics(integer, text, text, text, text, text, boolean, text), '
                 'api.available_metrics(timestamptz, jsonb) TO %I', ro);
  -- get_metrics reads api_max_rows and the writer's name as its caller.
  EXECUTE format('GRANT SELECT ON kwollect_settings TO %I', ro);
  EXECUTE format('GRANT SELECT ON metrics_by_job, metrics_by_job_summary, metrics_by_device_summary, metrics_summary, '
                 'nodetime_per_job, nodetime_by_job, promoted_metrics_job TO %I', ro);
END $$;
