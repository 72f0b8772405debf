/**
 * Known-answer data for the central database tests, inserted as the administrator. Times are
 * offsets in seconds from T0 = 2024-03-01T12:00:00Z unless said otherwise.
 *
 * - node-1 bmc_node_power_watt: 100 + k at k minutes, k = 0..10.
 * - node-1 network_ifacein_bytes_total (a counter): 100, 200, 50 (reset), 150 at 0, 10, 20, 30 s;
 *   per-second rates: none, 10, 5, 10.
 * - node-1 prom_node_cpu_seconds_total {cpu 0, mode idle}: 1000, 1008, 1017 at 0, 10, 20 s
 *   (idle rates 0.8 and 0.9).
 * - node-2 network_ifaceout_bytes_total: 0, 6000000 at 0, 60 s (100000 bytes/s).
 * - wattmetre1-port1 and -port2 wattmetre_power_watt, alias node-2: 10 and 20 at 0 s, 11 and 22
 *   at 1 s, so node-2 draws 30 then 33.
 * - node-3 temp_celsius {sensor a, _metric_scrape_time varying}: 1..5 at 0, 60, .. 240 s and 10 at
 *   300 s; energy_joules_total 10, 20, 30, 40, 50 at the same first five times.
 * - node-10 fan_rpm: 3000 at 0 s (natural ordering after node-3).
 * - node-1 bmc_node_power_watt 7 one minute ago and 8 ten minutes ago (default window).
 * - node-4 bmc_node_power_watt 40 thirty minutes ago (running job 8).
 *
 * Jobs (an operator's nodetime_per_job over table test_jobs): job 7 on node-1 and node-2 from T0
 * to T0+120 s (finished); job 8 on node-4 started an hour ago and still running; job 9 on node-3,
 * listed by its FQDN node-3.lyon.grid5000.fr as OAR lists nodes, from T0 to T0+240 s.
 */
import type { Sql } from "../../src/central/connect.ts";

export const T0 = Date.parse("2024-03-01T12:00:00Z");
export const T0_EPOCH = T0 / 1000;

/** ISO 8601 of T0 + seconds. */
export function at(seconds: number): string {
  return new Date(T0 + seconds * 1000).toISOString();
}

interface FixtureRow {
  t: number;
  device: string;
  metric: string;
  value: number;
  labels?: Record<string, unknown>;
}

export function fixtureRows(): FixtureRow[] {
  const rows: FixtureRow[] = [];
  for (let k = 0; k <= 10; k++) {
    rows.push({ t: k * 60, device: "node-1", metric: "bmc_node_power_watt", value: 100 + k });
  }
  [100, 200, 50, 150].forEach((v, i) =>
    rows.push({ t: i * 10, device: "node-1", metric: "network_ifacein_bytes_total", value: v })
  );
  [1000, 1008, 1017].forEach((v, i) =>
    rows.push({
      t: i * 10,
      device: "node-1",
      metric: "prom_node_cpu_seconds_total",
      value: v,
      labels: { cpu: "0", mode: "idle" },
    })
  );
  rows.push({ t: 0, device: "node-2", metric: "network_ifaceout_bytes_total", value: 0 });
  rows.push({ t: 60, device: "node-2", metric: "network_ifaceout_bytes_total", value: 6000000 });
  for (const [t, p1, p2] of [[0, 10, 20], [1, 11, 22]] as const) {
    rows.push({
      t,
      device: "wattmetre1-port1",
      metric: "wattmetre_power_watt",
      value: p1,
      labels: { _device_alias: "node-2" },
    });
    rows.push({
      t,
      device: "wattmetre1-port2",
      metric: "wattmetre_power_watt",
      value: p2,
      labels: { _device_alias: "node-2" },
    });
  }
  for (let k = 0; k < 5; k++) {
    rows.push({
      t: k * 60,
      device: "node-3",
      metric: "temp_celsius",
      value: k + 1,
      labels: { sensor: "a", _metric_scrape_time: T0_EPOCH + k * 60 + 0.25 },
    });
    rows.push({ t: k * 60, device: "node-3", metric: "energy_joules_total", value: (k + 1) * 10 });
  }
  rows.push({
    t: 300,
    device: "node-3",
    metric: "temp_celsius",
    value: 10,
    labels: { sensor: "a", _metric_scrape_time: 1 },
  });
  rows.push({ t: 0, device: "node-10", metric: "fan_rpm", value: 3000 });
  return rows;
}

export async function loadFixture(admin: Sql): Promise<void> {
  const rows = fixtureRows();
  await admin`
    INSERT INTO metrics ("timestamp", device_id, metric_id, value, labels)
    SELECT to_timestamp(${T0_EPOCH} + r.t), r.device, r.metric, r.value, coalesce(r.labels, '{}')
    FROM jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb)
      AS r(t double precision, device text, metric text, value double precision, labels jsonb)`;
  await admin`
    INSERT INTO metrics ("timestamp", device_id, metric_id, value) VALUES
      (now() - interval '1 minute', 'node-1', 'bmc_node_power_watt', 7),
      (now() - interval '10 minutes', 'node-1', 'bmc_node_power_watt', 8),
      (now() - interval '30 minutes', 'node-4', 'bmc_node_power_watt', 40)`;
  await admin`CREATE TABLE test_jobs (job_id integer, start_time timestamptz, stop_time timestamptz, node text)`;
  await admin`
    INSERT INTO test_jobs VALUES
      (7, to_timestamp(${T0_EPOCH}), to_timestamp(${T0_EPOCH + 120}), 'node-1'),
      (7, to_timestamp(${T0_EPOCH}), to_timestamp(${T0_EPOCH + 120}), 'node-2'),
      (8, now() - interval '1 hour', NULL, 'node-4'),
      (9, to_timestamp(${T0_EPOCH}), to_timestamp(${T0_EPOCH + 240}), 'node-3.lyon.grid5000.fr')`;
  await admin`CREATE OR REPLACE VIEW nodetime_per_job AS SELECT job_id, start_time, stop_time, node FROM test_jobs`;
}

/** The Kwollect README's example of a jobmetrics requests file, as written there. */
export const README_JOBMETRICS_REQUESTS = [
  "SELECT SUM(jobnode_energy_watthour) AS job_energy_watthour FROM (SELECT AVG(value) * EXTRACT(EPOCH FROM AGE(MAX(timestamp), MIN(timestamp)))/3600 AS jobnode_energy_watthour FROM jobmetrics WHERE metric_id = 'bmc_node_power_watt' GROUP BY device_id) s",
  "SELECT MAX(value) AS jobnode_maxpower_watt FROM jobmetrics WHERE metric_id = 'bmc_node_power_watt'",
  "SELECT AVG(1-value) AS job_cpu_avgusage_percent FROM jobmetrics WHERE metric_id = 'prom_node_cpu_seconds_total' AND labels->>'mode' = 'idle'",
  "SELECT MAX(1-value) AS job_cpu_maxusage_percent FROM jobmetrics WHERE metric_id = 'prom_node_cpu_seconds_total' AND labels->>'mode' = 'idle'",
  "SELECT AVG(value)*8/1024/1024 AS job_network_avginput_mbps FROM jobmetrics WHERE metric_id = 'network_ifaceout_bytes_total'",
  "SELECT MAX(value)*8/1024/1024 AS jobnode_network_maxinput_mbps FROM jobmetrics WHERE metric_id = 'network_ifaceout_bytes_total'",
].join("\n") + "\n";
