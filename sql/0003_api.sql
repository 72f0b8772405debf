-- 0003_api: the functions PostgREST exposes (schema api), their helpers, and who may call what.
--
-- Every parameter reaches SQL as a bound value: no function here splices a caller's text into a
-- statement. Errors use SQLSTATEs PostgREST maps to HTTP statuses: 22023 (400) for bad
-- arguments, 42501 (401/403) for refused callers, P0002 (404) for unknown jobs, 57014 for
-- requests that hit the statement timeout.
--
-- Settings: kwollect.user, kwollect.user_ro (role names). Never edited once shipped.

-- A comma-separated list of device names, trimmed, FQDNs cut at the first dot, empty items
-- dropped, duplicates removed.
CREATE OR REPLACE FUNCTION kwollect_device_list(list text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(array_agg(DISTINCT split_part(btrim(item), '.', 1)), '{}')
  FROM unnest(string_to_array(list, ',')) item
  WHERE btrim(item) <> ''
$$;

-- A comma-separated list of exact names (metric ids), trimmed; NULL when empty (no filter).
CREATE OR REPLACE FUNCTION kwollect_name_list(list text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT array_agg(DISTINCT btrim(item))
  FROM unnest(string_to_array(list, ',')) item
  WHERE btrim(item) <> ''
$$;

-- Kwollect's time arguments: a number is epoch seconds, anything else a PostgreSQL timestamptz
-- literal (ISO 8601; without a zone, the server's TimeZone applies).
CREATE OR REPLACE FUNCTION kwollect_parse_time(arg_name text, t text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF t IS NULL OR btrim(t) = '' THEN
    RETURN NULL;
  END IF;
  IF btrim(t) ~ '^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$' THEN
    RETURN to_timestamp(btrim(t)::double precision);
  END IF;
  RETURN btrim(t)::timestamptz;
EXCEPTION WHEN data_exception THEN
  RAISE EXCEPTION 'Cannot parse % ''%'': expected epoch seconds or an ISO 8601 date', arg_name, t
    USING ERRCODE = '22023';
END $$;

-- Increase per second between two successive values of one series: NULL for the first value or
-- two values at the same time; after a decrease (counter reset) the counter restarted from zero,
-- so the increase is the new value. NaN in, NaN out.
CREATE OR REPLACE FUNCTION kwollect_rate(value double precision, previous double precision, seconds double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN previous IS NULL OR seconds IS NULL OR seconds <= 0 THEN NULL
    WHEN value = 'NaN' OR previous = 'NaN' THEN 'NaN'
    WHEN value < previous THEN value / seconds
    ELSE (value - previous) / seconds
  END
$$;

-- The rows get_metrics reads: from the raw or the summary view, by device, time and metric.
CREATE OR REPLACE FUNCTION kwollect_select_metrics(devices text[], metric_ids text[], t_start timestamptz,
                                                   t_end timestamptz, from_summary boolean)
RETURNS SETOF metrics
LANGUAGE sql STABLE AS $$
  SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels
  FROM metrics_by_device d
  WHERE NOT from_summary AND d.device_id = ANY (devices) AND d."timestamp" BETWEEN t_start AND t_end
    AND (metric_ids IS NULL OR d.metric_id = ANY (metric_ids))
  UNION ALL
  SELECT d."timestamp", d.device_id, d.metric_id, d.value, d.labels
  FROM metrics_by_device_summary d
  WHERE from_summary AND d.device_id = ANY (devices) AND d."timestamp" BETWEEN t_start AND t_end
    AND (metric_ids IS NULL OR d.metric_id = ANY (metric_ids))
$$;

CREATE OR REPLACE FUNCTION api.get_metrics(devices text DEFAULT NULL, nodes text DEFAULT NULL,
                                           metrics text DEFAULT NULL, start_time text DEFAULT NULL,
                                           end_time text DEFAULT NULL, job_id integer DEFAULT NULL,
                                           summary boolean DEFAULT false, as_rate text DEFAULT NULL)
RETURNS SETOF metrics
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
  device_list text[] := kwollect_device_list(concat_ws(',', get_metrics.nodes, get_metrics.devices));
  metric_list text[] := kwollect_name_list(get_metrics.metrics);
  t_start timestamptz := kwollect_parse_time('start_time', get_metrics.start_time);
  t_end timestamptz := kwollect_parse_time('end_time', get_metrics.end_time);
  rate_mode text;
  job_start timestamptz;
  job_end timestamptz;
  job_nodes text[];
BEGIN
  rate_mode := CASE lower(btrim(coalesce(get_metrics.as_rate, '')))
    WHEN '' THEN 'none' WHEN '0' THEN 'none' WHEN 'false' THEN 'none' WHEN 'f' THEN 'none' WHEN 'no' THEN 'none'
    WHEN '1' THEN 'all' WHEN 'true' THEN 'all' WHEN 't' THEN 'all' WHEN 'yes' THEN 'all'
    WHEN 'auto' THEN 'auto'
  END;
  IF rate_mode IS NULL THEN
    RAISE EXCEPTION 'Invalid as_rate ''%'': expected 1, true, auto, 0 or false', get_metrics.as_rate
      USING ERRCODE = '22023';
  END IF;

  IF get_metrics.job_id IS NOT NULL THEN
    SELECT min(n.start_time), CASE WHEN bool_or(n.stop_time IS NULL) THEN now() ELSE max(n.stop_time) END,
           array_agg(DISTINCT n.node)
    INTO job_start, job_end, job_nodes
    FROM nodetime_per_job n WHERE n.job_id = get_metrics.job_id;
    IF job_nodes IS NULL THEN
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
    IF rate_mode = 'none' THEN
      RETURN QUERY
      SELECT s."timestamp", s.device_id, s.metric_id, s.value, s.labels
      FROM kwollect_select_metrics(device_list, metric_list, t_start, t_end, coalesce(get_metrics.summary, false)) s
      ORDER BY s."timestamp", s.device_id, s.metric_id;
    ELSE
      RETURN QUERY
      SELECT s."timestamp", s.device_id, s.metric_id,
             CASE WHEN rate_mode = 'auto' AND s.metric_id !~ '_total$' THEN s.value
                  ELSE kwollect_rate(s.value, lag(s.value) OVER w,
                                     extract(epoch FROM s."timestamp" - lag(s."timestamp") OVER w)::double precision)
             END,
             s.labels
      FROM kwollect_select_metrics(device_list, metric_list, t_start, t_end, coalesce(get_metrics.summary, false)) s
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
-- of params.devices (a JSON array) or of the job params.job_id (digits; the job's end caps `at`).
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
    SELECT array_agg(DISTINCT n.node), CASE WHEN bool_or(n.stop_time IS NULL) THEN now() ELSE max(n.stop_time) END
    INTO device_list, job_end
    FROM nodetime_per_job n WHERE n.job_id = (p->>'job_id')::integer;
    IF device_list IS NULL THEN
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

-- Metric rows from an API body: one JSON object or an array of them, with keys device_id and
-- metric_id (required), timestamp (epoch seconds or ISO 8601; default now), value (default NaN)
-- and labels (an object). When node is given (insert_user_metrics), device_id is that node.
CREATE OR REPLACE FUNCTION kwollect_metric_rows(body jsonb, caller text, node text DEFAULT NULL)
RETURNS SETOF metrics
LANGUAGE plpgsql STABLE AS $$
DECLARE
  item jsonb;
  pos integer := 0;
  unknown text;
  r metrics;
BEGIN
  IF body IS NULL OR jsonb_typeof(body) NOT IN ('object', 'array') THEN
    RAISE EXCEPTION '%: the request body must be a JSON object or an array of objects', caller USING ERRCODE = '22023';
  END IF;
  FOR item IN
    SELECT e FROM jsonb_array_elements(CASE WHEN jsonb_typeof(body) = 'array' THEN body ELSE jsonb_build_array(body) END) e
  LOOP
    pos := pos + 1;
    IF jsonb_typeof(item) <> 'object' THEN
      RAISE EXCEPTION '%: item %: expected a JSON object, got %', caller, pos, item USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(quote_literal(k), ', ') INTO unknown FROM jsonb_object_keys(item) k
    WHERE k NOT IN ('timestamp', 'device_id', 'metric_id', 'value', 'labels');
    IF unknown IS NOT NULL THEN
      RAISE EXCEPTION '%: item %: unknown key %', caller, pos, unknown USING ERRCODE = '22023';
    END IF;

    IF node IS NULL THEN
      IF jsonb_typeof(item->'device_id') IS DISTINCT FROM 'string' OR item->>'device_id' = '' THEN
        RAISE EXCEPTION '%: item %: ''device_id'' must be a non-empty string', caller, pos USING ERRCODE = '22023';
      END IF;
      r.device_id := item->>'device_id';
    ELSE
      IF item ? 'device_id' AND split_part(item->>'device_id', '.', 1) IS DISTINCT FROM node THEN
        RAISE EXCEPTION '%: item %: device_id ''%'' is not the calling node ''%''', caller, pos, item->>'device_id', node
          USING ERRCODE = '42501';
      END IF;
      r.device_id := node;
    END IF;

    IF jsonb_typeof(item->'metric_id') IS DISTINCT FROM 'string' OR item->>'metric_id' = '' THEN
      RAISE EXCEPTION '%: item %: ''metric_id'' must be a non-empty string', caller, pos USING ERRCODE = '22023';
    END IF;
    r.metric_id := item->>'metric_id';

    r."timestamp" := CASE coalesce(jsonb_typeof(item->'timestamp'), 'null')
      WHEN 'null' THEN now()
      WHEN 'number' THEN to_timestamp((item->>'timestamp')::double precision)
      WHEN 'string' THEN kwollect_parse_time('timestamp', item->>'timestamp')
    END;
    IF r."timestamp" IS NULL THEN
      RAISE EXCEPTION '%: item %: ''timestamp'' must be epoch seconds or an ISO 8601 date, got %',
        caller, pos, item->'timestamp' USING ERRCODE = '22023';
    END IF;

    BEGIN
      r.value := CASE coalesce(jsonb_typeof(item->'value'), 'null')
        WHEN 'null' THEN 'NaN'::double precision
        WHEN 'number' THEN (item->>'value')::double precision
        WHEN 'string' THEN (item->>'value')::double precision
      END;
    EXCEPTION WHEN data_exception THEN
      r.value := NULL;
    END;
    IF r.value IS NULL THEN
      RAISE EXCEPTION '%: item %: ''value'' must be a number, got %', caller, pos, item->'value' USING ERRCODE = '22023';
    END IF;

    r.labels := CASE coalesce(jsonb_typeof(item->'labels'), 'null')
      WHEN 'null' THEN '{}'::jsonb
      WHEN 'object' THEN item->'labels'
    END;
    IF r.labels IS NULL THEN
      RAISE EXCEPTION '%: item %: ''labels'' must be a JSON object, got %', caller, pos, item->'labels'
        USING ERRCODE = '22023';
    END IF;
    RETURN NEXT r;
  END LOOP;
END $$;

-- POST /rpc/insert_metrics with one object or an array of objects; needs the API token. PostgREST
-- passes the whole body to a function with a single unnamed json parameter.
CREATE OR REPLACE FUNCTION api.insert_metrics(jsonb)
RETURNS SETOF metrics
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $$
BEGIN
  RETURN QUERY
  INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
  SELECT r."timestamp", r.device_id, r.metric_id, r.value, r.labels FROM kwollect_metric_rows($1, 'insert_metrics') r
  RETURNING *;
END $$;

-- insert_user_metrics identifies the calling node from two request headers that only the reverse
-- proxy in front of PostgREST sets (PostgREST itself listens on 127.0.0.1):
--   X-Kwollect-Proxy-Key  the secret printed by setup-db (kwollect_secrets 'proxy_key'): proves
--                         the request came through the proxy;
--   X-Kwollect-Client     the client's address as the proxy saw it ($remote_addr), overwriting
--                         whatever the client sent; or its host name when the proxy resolves it
--                         (forward-confirmed reverse DNS).
-- An address is mapped to a node through kwollect_node_addresses (filled by the operator); a host
-- name is cut at its first dot.
CREATE TABLE IF NOT EXISTS kwollect_secrets (name text PRIMARY KEY, value text NOT NULL);
REVOKE ALL ON kwollect_secrets FROM PUBLIC;
CREATE OR REPLACE VIEW kwollect_proxy_key AS SELECT value FROM kwollect_secrets WHERE name = 'proxy_key';

CREATE TABLE IF NOT EXISTS kwollect_node_addresses (address inet PRIMARY KEY, node text NOT NULL);

-- POST /rpc/insert_user_metrics without a token, from a node of a running job: inserts under the
-- node's own device id, with timestamps between the job's start and one minute from now, and no
-- `_device_*` labels (which would file the values under another device).
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
  WHERE n.node = caller_node AND n.stop_time IS NULL AND n.start_time <= now();
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

-- Job-wide figures (get_job_metrics): the requests of setup-db's --jobmetrics_requests_path file,
-- one per line, each a SELECT over `jobmetrics` returning one row of numeric columns.
CREATE TABLE IF NOT EXISTS kwollect_jobmetrics_requests (line integer PRIMARY KEY, request text NOT NULL);

-- What a request sees as `jobmetrics`: the job's rows (metrics_by_job), with counters (metric ids
-- ending in `_total`) turned into per-second rates as get_metrics(as_rate => 'auto') does.
CREATE OR REPLACE FUNCTION kwollect_jobmetrics(job integer)
RETURNS TABLE ("timestamp" timestamptz, device_id text, metric_id text, value double precision, labels jsonb,
               job_id integer)
LANGUAGE sql STABLE AS $$
  SELECT m."timestamp", m.device_id, m.metric_id,
         CASE WHEN m.metric_id ~ '_total$'
              THEN kwollect_rate(m.value, lag(m.value) OVER w,
                                 extract(epoch FROM m."timestamp" - lag(m."timestamp") OVER w)::double precision)
              ELSE m.value END,
         m.labels, m.job_id
  FROM metrics_by_job m
  WHERE m.job_id = job
  WINDOW w AS (PARTITION BY m.device_id, m.metric_id, m.labels ORDER BY m."timestamp")
$$;

-- The statement get_job_metrics runs: every request evaluated over one materialised jobmetrics,
-- $1 being the job id. The requests are the administrator's (setup-db), never the caller's.
CREATE OR REPLACE FUNCTION kwollect_jobmetrics_statement() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT 'WITH jobmetrics AS MATERIALIZED (SELECT * FROM kwollect_jobmetrics($1)), '
         || 'figures (line, figures) AS (VALUES '
         || string_agg(format('(%s, (SELECT row_to_json(r) FROM (%s) r))', line, request), ', ' ORDER BY line)
         || ') SELECT f.key, f.value::double precision FROM figures, '
         || 'json_each_text(figures.figures) WITH ORDINALITY f(key, value, pos) ORDER BY figures.line, f.pos'
  FROM kwollect_jobmetrics_requests
$$;

CREATE OR REPLACE FUNCTION api.get_job_metrics(job_id integer)
RETURNS TABLE (metric_id text, value double precision)
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
  statement text := kwollect_jobmetrics_statement();
BEGIN
  IF get_job_metrics.job_id IS NULL THEN
    RAISE EXCEPTION 'Missing ''job_id'' argument' USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM nodetime_per_job n WHERE n.job_id = get_job_metrics.job_id) THEN
    RAISE EXCEPTION 'Unknown job_id %: no such job in nodetime_per_job', get_job_metrics.job_id USING ERRCODE = 'P0002';
  END IF;
  IF statement IS NULL THEN
    RAISE EXCEPTION 'No job-wide requests are installed'
      USING ERRCODE = '0A000', HINT = 'Run setup-db with --jobmetrics_requests_path';
  END IF;
  BEGIN
    RETURN QUERY EXECUTE statement USING get_job_metrics.job_id;
  EXCEPTION WHEN query_canceled THEN
    RAISE EXCEPTION 'Request timeout, too much data to process' USING ERRCODE = '57014';
  END;
END $$;

-- Called by the job scheduler at each job's start and end (POST /rpc/update_promoted_metrics,
-- with the API token): promotes the metrics of promoted_metrics_job, removes those of jobs that
-- ended, leaves the operator's rows (job_id NULL) alone. Returns the job-driven rows.
CREATE OR REPLACE FUNCTION api.update_promoted_metrics()
RETURNS SETOF promoted_metrics
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $$
BEGIN
  LOCK TABLE promoted_metrics IN SHARE ROW EXCLUSIVE MODE;
  -- One statement: the DELETE and the INSERT see the same snapshot and touch disjoint rows.
  WITH wanted AS (
    SELECT DISTINCT j.job_id, j.node AS device_id, j.metric_id FROM promoted_metrics_job j
  ), ended AS (
    DELETE FROM promoted_metrics p
    WHERE p.job_id IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM wanted w
      WHERE w.job_id = p.job_id AND w.device_id = p.device_id AND w.metric_id IS NOT DISTINCT FROM p.metric_id)
  )
  INSERT INTO promoted_metrics (device_id, metric_id, job_id)
  SELECT w.device_id, w.metric_id, w.job_id FROM wanted w
  WHERE NOT EXISTS (
    SELECT 1 FROM promoted_metrics p
    WHERE p.job_id = w.job_id AND p.device_id = w.device_id AND p.metric_id IS NOT DISTINCT FROM w.metric_id);
  RETURN QUERY SELECT p.* FROM promoted_metrics p WHERE p.job_id IS NOT NULL ORDER BY p.device_id, p.metric_id, p.job_id;
END $$;

-- Who may do what. PostgREST logs in as the Kwollect user and switches to <user>_ro for anonymous
-- requests, or to the token's role (the Kwollect user) for authenticated ones. The Kwollect user
-- is a member of <user>_ro and inherits its rights.
DO $$
DECLARE
  u text := current_setting('kwollect.user');
  ro text := current_setting('kwollect.user_ro');
  timescale boolean := current_setting('kwollect.timescaledb') = 'on';
BEGIN
  REVOKE ALL ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
  -- Functions that later migrations add to api are not callable by everyone either.
  ALTER DEFAULT PRIVILEGES IN SCHEMA api REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
  EXECUTE format('GRANT EXECUTE ON FUNCTION api.get_metrics(text, text, text, text, text, integer, boolean, text), '
                 'api.available_metrics(timestamptz, jsonb), api.get_job_metrics(integer), '
                 'api.insert_user_metrics(jsonb) TO %I', ro);
  EXECUTE format('GRANT EXECUTE ON FUNCTION api.insert_metrics(jsonb), api.update_promoted_metrics() TO %I', u);

  EXECUTE format('GRANT SELECT ON metrics_by_device, metrics_by_job, metrics_summary, metrics_by_device_summary, '
                 'metrics_by_job_summary, nodetime_per_job, nodetime_by_job, promoted_metrics_job, '
                 'kwollect_jobmetrics_requests TO %I', ro);

  -- insert_user_metrics runs as the Kwollect user, the least privileged role that may insert.
  EXECUTE format('ALTER FUNCTION api.insert_user_metrics(jsonb) OWNER TO %I', u);
  EXECUTE format('GRANT SELECT ON kwollect_proxy_key, kwollect_node_addresses TO %I', u);

  IF NOT timescale THEN
    -- The summary trigger runs as whoever inserts into metrics.
    EXECUTE format('GRANT INSERT ON kwollect_summary_invalidations TO %I', u);
    REVOKE ALL ON FUNCTION kwollect_refresh_summary(interval), kwollect_apply_retention(), kwollect_maintenance()
      FROM PUBLIC;
  ELSE
    REVOKE ALL ON PROCEDURE kwollect_archive_chunks(integer, jsonb) FROM PUBLIC;
  END IF;
END $$;
