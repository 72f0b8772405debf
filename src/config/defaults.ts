/**
 * The table of every configuration key: its default, its type and what it means. This is the one
 * place defaults live; `resolve.ts` applies the precedence flag > environment > file > default,
 * and the README's configuration reference is generated from this table.
 *
 * Kwollect's keys keep their names, meanings and defaults (kwollector, kwollect-setup-db,
 * kwollector-wattmetre, kwollect-setup-db-oar), so an existing Kwollect configuration file works
 * unchanged. New keys carry their unit in their name.
 */

export type KeyType = "string" | "integer" | "number" | "boolean";

export interface KeySpec {
  type: KeyType;
  default: string | number | boolean;
  /** One line for `--help`, the generated reference and `kwollector init`. */
  doc: string;
  /** Allowed values, for enumerations. */
  choices?: readonly string[];
  /** Never printed, logged or shown by `status`. */
  secret?: boolean;
  /** Smallest allowed value, for numbers. */
  min?: number;
  /** Largest allowed value, for numbers (TIMER_MAX_MS for every duration a timer waits). */
  max?: number;
  /** Further validation of a string value: the problem, or undefined when it is valid. */
  check?: (value: string) => string | undefined;
  group: "collector" | "spool" | "forward" | "database" | "setup-db" | "wattmetre" | "oar";
}

/**
 * The longest delay a timer can hold: setTimeout clamps a longer one to 1 ms, so an hour-long
 * period beyond it would poll in a tight loop. Every `_ms` key is bounded by it.
 */
export const TIMER_MAX_MS = 2 ** 31 - 1;
/** Why a duration has that upper bound, for its error message. */
export const TIMER_NOTE = " ms (about 24.8 days), the longest delay a timer can hold";

export const DEFAULTS = {
  // Kwollect's kwollector keys.
  metrics_dir: {
    type: "string",
    default: "/etc/kwollect/metrics.d/",
    doc: "Directory of metric description files: every file not starting with a dot, whatever its extension",
    group: "collector",
  },
  metrics_file_max_bytes: {
    type: "integer",
    default: 1024 * 1024,
    min: 1024,
    doc: "Largest metrics.d file read; a larger one is refused with an error, the other files load",
    group: "collector",
  },
  metrics_file_max_entries: {
    type: "integer",
    default: 5000,
    min: 1,
    doc: "Most entries in one metrics.d file; a file with more is refused with an error",
    group: "collector",
  },
  metrics_max_entries: {
    type: "integer",
    default: 20000,
    min: 1,
    doc: "Most entries over all of metrics.d; a file that would exceed it is refused with an error",
    group: "collector",
  },
  db_host: {
    type: "string",
    default: "localhost",
    doc: "Central PostgreSQL host (a path starting with / is a Unix socket directory)",
    group: "database",
  },
  db_port: { type: "integer", default: 5432, min: 1, doc: "Central PostgreSQL port", group: "database" },
  db_name: { type: "string", default: "kwdb", doc: "Central database name", group: "database" },
  db_user: { type: "string", default: "kwuser", doc: "Central database user", group: "database" },
  db_password: {
    type: "string",
    default: "changeme",
    secret: true,
    doc: "Central database password",
    group: "database",
  },
  db_sslmode: {
    type: "string",
    default: "prefer",
    choices: ["disable", "prefer", "require", "verify-ca", "verify-full"],
    doc: "TLS to the central database, with libpq's meaning of each mode",
    group: "database",
  },
  db_sslrootcert: {
    type: "string",
    default: "",
    doc: "CA certificate file (PEM) that verify-ca and verify-full check the server against",
    group: "database",
  },
  log_level: {
    type: "string",
    default: "warning",
    choices: ["debug", "info", "warning", "error", "critical"],
    doc: "Least severe log level printed",
    group: "collector",
  },
  worker: {
    type: "integer",
    default: 8,
    min: 1,
    doc: "Kwollect's number of SQL insert tasks; accepted for compatibility and not used",
    group: "collector",
  },
  edge_id: {
    type: "string",
    default: "",
    doc: "Name of this collector in the delivery ledger and its own telemetry (default: host name)",
    group: "collector",
  },
  poll_timeout_ms: {
    type: "integer",
    default: 10000,
    min: 10,
    max: TIMER_MAX_MS,
    doc: "Longest a device poll may take, whatever its update_every; slots due meanwhile are skipped and counted",
    group: "collector",
  },
  snmp_timeout_ms: {
    type: "integer",
    default: 5000,
    min: 10,
    max: TIMER_MAX_MS,
    doc: "How long one SNMP request waits for its answer before it is sent again",
    group: "collector",
  },
  snmp_retries: {
    type: "integer",
    default: 1,
    min: 0,
    max: 10,
    doc: "Times an unanswered SNMP request is sent again (Kwollect: 1), within poll_timeout_ms",
    group: "collector",
  },
  snmp_max_oids_per_request: {
    type: "integer",
    default: 50,
    min: 1,
    doc: "Most OIDs in one SNMP GET (Kwollect used 50 to avoid fragmentation)",
    group: "collector",
  },
  promoted_refresh_ms: {
    type: "integer",
    default: 10000,
    min: 100,
    max: TIMER_MAX_MS,
    doc: "How often promoted_metrics is re-read from the central database",
    group: "collector",
  },
  telemetry_interval_ms: {
    type: "integer",
    default: 10000,
    min: 0,
    max: TIMER_MAX_MS,
    doc: "How often the collector stores its own health as samples of device <edge_id> (0: never)",
    group: "collector",
  },
  metrics_listen: {
    type: "string",
    default: "",
    check: checkListenAddress,
    doc: "host:port of a Prometheus endpoint (/metrics) with the same health figures (empty: off)",
    group: "collector",
  },
  prometheus_max_body_bytes: {
    type: "integer",
    default: 16 * 1024 * 1024,
    min: 1024,
    doc: "Largest body a Prometheus exporter may send, counted after decompression; a larger one fails the poll",
    group: "collector",
  },
  prometheus_max_series: {
    type: "integer",
    default: 50_000,
    min: 1,
    doc: "Most series one scrape of a Prometheus exporter may yield to its entries; more fails the poll",
    group: "collector",
  },
  redfish_tls_verify: {
    type: "string",
    default: "tofu",
    choices: ["tofu", "full", "ca", "none"],
    doc: "https metric urls: tofu pins each host's certificate at its first poll (kwollector trust HOST accepts " +
      "a new one), full checks the chain and host name, ca the chain only, none nothing",
    group: "collector",
  },
  redfish_ca_file: {
    type: "string",
    default: "",
    doc: "PEM file of the certificates trusted for https metric urls instead of the built-in roots",
    group: "collector",
  },
  redfish_max_body_bytes: {
    type: "integer",
    default: 4 * 1024 * 1024,
    min: 1024,
    doc: "Largest JSON document read from an https/http metric url, counted after decompression",
    group: "collector",
  },

  // The local spool.
  spool_path: {
    type: "string",
    default: "/var/lib/kwollect/spool.db",
    doc: "SQLite spool file; every sample is written here before it is forwarded",
    group: "spool",
  },
  spool_max_bytes: {
    type: "integer",
    default: 2 * 1024 ** 3,
    min: 1024 * 1024,
    doc: "Size budget of the spool; beyond it spool_full_policy applies",
    group: "spool",
  },
  spool_full_policy: {
    type: "string",
    default: "drop_oldest",
    choices: ["drop_oldest", "drop_newest"],
    doc: "What a full spool gives up: its oldest samples or the new ones (logged and counted)",
    group: "spool",
  },
  spool_synchronous: {
    type: "string",
    default: "full",
    choices: ["full", "normal"],
    doc: "full: a sample is durable when acknowledged; normal: a power cut may lose the last commit",
    group: "spool",
  },
  spool_commit_interval_ms: {
    type: "integer",
    default: 100,
    min: 1,
    max: TIMER_MAX_MS,
    doc: "Group commit period of the spool (at most 1000/this fsyncs per second)",
    group: "spool",
  },

  // Forwarding to the central database.
  forward_batch_rows: {
    type: "integer",
    default: 20000,
    min: 1,
    doc: "Most samples in one forwarded batch (one COPY, one ledger row)",
    group: "forward",
  },
  forward_interval_ms: {
    type: "integer",
    default: 500,
    min: 10,
    max: TIMER_MAX_MS,
    doc: "How often new samples are forwarded when there is no backlog",
    group: "forward",
  },
  forward_retry_max_ms: {
    type: "integer",
    default: 3000,
    min: 10,
    max: TIMER_MAX_MS,
    doc: "Longest wait between two attempts to reach the central database (jittered backoff): " +
      "how long live data may stay stale after the central database returns",
    group: "forward",
  },
  forward_timeout_ms: {
    type: "integer",
    default: 60000,
    min: 100,
    max: TIMER_MAX_MS,
    doc: "Longest a batch may take to commit before the connection is dropped and retried",
    group: "forward",
  },
  forward_method: {
    type: "string",
    default: "copy",
    choices: ["copy", "insert"],
    doc: "copy (fastest) or insert (INSERT ... SELECT FROM unnest, for servers without COPY such as PGlite)",
    group: "forward",
  },
  forward_backfill_rows_per_s: {
    type: "integer",
    default: 0,
    min: 0,
    doc: "Cap on the backlog drain rate in rows/s (0: no cap); fresh samples are never held back",
    group: "forward",
  },
  forward_pipeline_batches: {
    type: "integer",
    default: 2,
    min: 1,
    max: 8,
    doc: "Backlog batches in flight at once while the central database is fast, each on its own " +
      "connection (fresh samples have one more): the next batch is sent while the previous one commits",
    group: "forward",
  },
  forward_fleet_backfill_batches: {
    type: "integer",
    default: 2,
    min: 0,
    max: 64,
    doc: "Backlog batches the whole fleet may have in flight on the central database at once, " +
      "counted there with advisory locks (0: no limit); fresh samples are never counted",
    group: "forward",
  },

  // kwollect-setup-db.
  db_admin: { type: "string", default: "postgres", doc: "Administrator role used by setup-db", group: "setup-db" },
  db_admin_password: {
    type: "string",
    default: "changeme",
    secret: true,
    doc: "Password of db_admin",
    group: "setup-db",
  },
  kwollect_db_name: {
    type: "string",
    default: "",
    doc: "Database created by setup-db (default: db_name)",
    group: "setup-db",
  },
  kwollect_user: {
    type: "string",
    default: "",
    doc: "Owner and writer role created by setup-db (default: db_user); <user>_ro is derived",
    group: "setup-db",
  },
  kwollect_password: {
    type: "string",
    default: "",
    secret: true,
    doc: "Password of kwollect_user (default: db_password)",
    group: "setup-db",
  },
  kwollect_password_ro: {
    type: "string",
    default: "ro",
    secret: true,
    doc: "Password of the read-only role <user>_ro",
    group: "setup-db",
  },
  chunk_interval_hour: {
    type: "integer",
    default: 6,
    min: 1,
    doc: "TimescaleDB chunk interval of metrics (one chunk should fit in a quarter of RAM)",
    group: "setup-db",
  },
  chunk_compress_hour: {
    type: "integer",
    default: 24,
    min: 1,
    doc: "Age after which TimescaleDB compresses chunks",
    group: "setup-db",
  },
  request_timeout_min: {
    type: "integer",
    default: 5,
    min: 1,
    // PostgreSQL's statement_timeout holds at most 2^31-1 ms.
    max: Math.floor(TIMER_MAX_MS / 60_000),
    doc: "Statement timeout of the Kwollect user (API token requests, scripts), in minutes",
    group: "setup-db",
  },
  api_anonymous_timeout_s: {
    type: "integer",
    default: 60,
    min: 1,
    // PostgreSQL's statement_timeout holds at most 2^31-1 ms.
    max: Math.floor(TIMER_MAX_MS / 1000),
    doc: "Statement timeout of the read-only role <user>_ro (anonymous API requests, Grafana)",
    group: "setup-db",
  },
  api_max_rows: {
    type: "integer",
    default: 1000000,
    min: 0,
    doc: "Most rows one get_metrics call returns to readers, and PostgREST's db-max-rows (0: no limit)",
    group: "setup-db",
  },
  archive_path: {
    type: "string",
    default: "",
    doc: "Directory of a tablespace on another filesystem for old chunks (TimescaleDB only)",
    group: "setup-db",
  },
  jobmetrics_requests_path: {
    type: "string",
    default: "",
    doc: "File of job-wide SQL requests over jobmetrics, one per line (get_job_metrics)",
    group: "setup-db",
  },
  retention_days: {
    type: "integer",
    default: 0,
    min: 0,
    doc: "Drop raw metrics older than this many days (0: keep everything, as Kwollect does)",
    group: "setup-db",
  },
  api_token_expiry_days: {
    type: "integer",
    default: 0,
    min: 0,
    doc: "Lifetime of the API token printed by setup-db (0: no expiry, as Kwollect)",
    group: "setup-db",
  },

  // kwollector-wattmetre.
  wattmetre_id: {
    type: "string",
    default: "wattmetre",
    doc: "Wattmeter identifier; port N is device <wattmetre_id>-portN",
    group: "wattmetre",
  },
  mapping_file_path: {
    type: "string",
    default: "",
    doc: "YAML file mapping nodes to wattmeter ports (node: [wattmetre-port3, ...])",
    group: "wattmetre",
  },

  // kwollect-setup-db-oar.
  oardb_host: { type: "string", default: "oar", doc: "OAR database host", group: "oar" },
  oardb_port: { type: "integer", default: 5432, min: 1, doc: "OAR database port", group: "oar" },
  oardb_name: { type: "string", default: "oar2", doc: "OAR database name", group: "oar" },
  oardb_user: { type: "string", default: "oarreader", doc: "OAR database read-only user", group: "oar" },
  oardb_password: {
    type: "string",
    default: "read",
    secret: true,
    doc: "Password of oardb_user",
    group: "oar",
  },
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof DEFAULTS;

type ValueOf<S> = S extends { type: "string" } ? string
  : S extends { type: "integer" | "number" } ? number
  : S extends { type: "boolean" } ? boolean
  : never;

/** A fully resolved configuration: every key has a value. */
export type Config = { -readonly [K in ConfigKey]: ValueOf<(typeof DEFAULTS)[K]> };

export const CONFIG_KEYS = Object.keys(DEFAULTS) as ConfigKey[];

export function keySpec(key: ConfigKey): KeySpec {
  return DEFAULTS[key];
}

/** `host:port`, `[v6]:port` or `:port` (all interfaces), with a port from 1 to 65535. */
export function parseListenAddress(value: string): { hostname: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s\[\]]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) return undefined;
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port };
}

function checkListenAddress(value: string): string | undefined {
  if (value === "" || parseListenAddress(value)) return undefined;
  return `Invalid value ${JSON.stringify(value)}: expected host:port, [ipv6]:port or :port (port 1-65535)`;
}
