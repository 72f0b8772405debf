import { type Exporter, startExporter } from "../peers/prometheus_exporter.ts";
import type { ServedLog } from "./served.ts";

/**
 * A simulated compute node: the shared Prometheus exporter serving a scrape counter, two inlet
 * temperatures and a fan speed, all changing at every scrape. Every value it serves is recorded
 * in the ServedLog under the metric id the collector gives it (`prom_<name>`).
 */
export function startComputeNode(deviceId: string, served: ServedLog): Exporter {
  return startExporter({
    body: (scrapes) => {
      // Quarter steps: exact in binary, so served and stored values compare exactly.
      const front = 22 + ((scrapes * 7) % 40) / 4;
      const rear = 30 + ((scrapes * 11) % 48) / 4;
      const fan = 4200 + ((scrapes * 37) % 600);
      served.record(deviceId, "prom_demo_scrapes_total", scrapes);
      served.record(deviceId, "prom_demo_inlet_temperature_celsius", front);
      served.record(deviceId, "prom_demo_inlet_temperature_celsius", rear);
      served.record(deviceId, "prom_demo_fan_speed_rpm", fan);
      return [
        "# HELP demo_scrapes_total Scrapes served by this exporter",
        "# TYPE demo_scrapes_total counter",
        `demo_scrapes_total ${scrapes}`,
        "# HELP demo_inlet_temperature_celsius Air temperature at the inlets",
        "# TYPE demo_inlet_temperature_celsius gauge",
        `demo_inlet_temperature_celsius{sensor="front"} ${front}`,
        `demo_inlet_temperature_celsius{sensor="rear"} ${rear}`,
        "# HELP demo_fan_speed_rpm Fan speed",
        "# TYPE demo_fan_speed_rpm gauge",
        `demo_fan_speed_rpm{fan="1"} ${fan}`,
      ].join("\n") + "\n";
    },
  });
}
