/**
 * OAR's database for the setup-db-oar tests, in the test cluster: the tables Kwollect reads, with
 * OAR 2.5's types, and a finished and a running job.
 */
import type { Config } from "../../src/config/defaults.ts";
import type { PgCluster } from "../../scripts/peers/postgres.ts";
import { T0_EPOCH } from "./fixture.ts";

const OAR_SCHEMA = `
CREATE TABLE jobs (
  job_id bigserial PRIMARY KEY, job_name varchar(100), job_user varchar(255) NOT NULL DEFAULT '',
  state varchar(16) NOT NULL, start_time integer NOT NULL DEFAULT 0, stop_time integer NOT NULL DEFAULT 0,
  assigned_moldable_job integer NOT NULL DEFAULT 0);
CREATE TABLE job_types (
  job_type_id bigserial PRIMARY KEY, job_id integer NOT NULL DEFAULT 0, type varchar(255) NOT NULL,
  types_index varchar(7) NOT NULL DEFAULT 'CURRENT');
CREATE TABLE assigned_resources (
  moldable_job_id integer NOT NULL DEFAULT 0, resource_id integer NOT NULL DEFAULT 0,
  assigned_resource_index varchar(7) NOT NULL DEFAULT 'CURRENT');
CREATE TABLE resources (
  resource_id bigserial PRIMARY KEY, type varchar(100) NOT NULL DEFAULT 'default',
  network_address varchar(100) NOT NULL DEFAULT '', state varchar(9) NOT NULL DEFAULT 'Alive', core integer);
`;

/**
 * Job 100 ran on node-1 (two cores) from T0 to T0+10 min with type monitor; job 101 runs on node-2
 * (plus a disk resource, not a node) since an hour ago with types monitor=wattmetre_power_watt and
 * deploy; job 102 waits, with no resources yet.
 */
function oarData(nowS: number): string {
  return `
INSERT INTO resources (resource_id, type, network_address, core) VALUES
  (1, 'default', 'node-1.lyon.grid5000.fr', 0), (2, 'default', 'node-1.lyon.grid5000.fr', 1),
  (3, 'default', 'node-2.lyon.grid5000.fr', 0), (4, 'disk', 'node-9.lyon.grid5000.fr', NULL);
INSERT INTO jobs (job_id, job_user, state, start_time, stop_time, assigned_moldable_job) VALUES
  (100, 'alice', 'Terminated', ${T0_EPOCH}, ${T0_EPOCH + 600}, 1000),
  (101, 'bob', 'Running', ${nowS - 3600}, 0, 1001),
  (102, 'carol', 'Waiting', 0, 0, 0);
INSERT INTO assigned_resources (moldable_job_id, resource_id) VALUES (1000, 1), (1000, 2), (1001, 3), (1001, 4);
INSERT INTO job_types (job_id, type) VALUES (100, 'monitor'), (101, 'monitor=wattmetre_power_watt'), (101, 'deploy'),
  (102, 'monitor');
`;
}

export async function createOarDatabase(pg: PgCluster): Promise<void> {
  const server = pg.admin("postgres");
  await server`CREATE ROLE oarreader LOGIN PASSWORD 'read-pw'`;
  await server`CREATE DATABASE oar2`;
  const oar = pg.admin("oar2");
  await oar.unsafe(OAR_SCHEMA);
  await oar.unsafe(oarData(Math.floor(Date.now() / 1000)));
  await oar`GRANT SELECT ON ALL TABLES IN SCHEMA public TO oarreader`;
}

/** `config` with the oardb_* options of the OAR database above. */
export function oarConfig(config: Config, pg: PgCluster): Config {
  return {
    ...config,
    oardb_host: pg.host,
    oardb_port: pg.port,
    oardb_name: "oar2",
    oardb_user: "oarreader",
    oardb_password: "read-pw",
  };
}
