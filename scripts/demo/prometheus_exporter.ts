import type { ServedLog } from "./served.ts";

/**
 * A simulated compute node exposing a Prometheus exporter on 127.0.0.1: a scrape counter, two
 * inlet temperatures and a fan speed, all changing at every scrape. Every value it serves is
 * recorded in the ServedLog under the metric id the collector gives it (`prom_<name>`).
 */
export interface SimulatedExporter {
  port: number;
  scrapes(): number;
  close(): Promise<void>;
}

export function startPrometheusExporter(deviceId: string, served: ServedLog): SimulatedExporter {
  let scrapes = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    scrapes++;
    // Quarter steps: exact in binary, so served and stored values compare exactly.
    const front = 22 + ((scrapes * 7) % 40) / 4;
    const rear = 30 + ((scrapes * 11) % 48) / 4;
    const fan = 4200 + ((scrapes * 37) % 600);
    const lines = [
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
    ];
    served.record(deviceId, "prom_demo_scrapes_total", scrapes);
    served.record(deviceId, "prom_demo_inlet_temperature_celsius", front);
    served.record(deviceId, "prom_demo_inlet_temperature_celsius", rear);
    served.record(deviceId, "prom_demo_fan_speed_rpm", fan);
    return new Response(lines.join("\n") + "\n", { headers: { "content-type": "text/plain; version=0.0.4" } });
  });
  return {
    port: server.addr.port,
    scrapes: () => scrapes,
    close: () => server.shutdown(),
  };
}
