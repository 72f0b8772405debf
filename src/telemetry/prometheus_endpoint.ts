import { logger } from "../log.ts";
import type { MetricPoint } from "./telemetry.ts";

/**
 * The optional local Prometheus endpoint (`metrics_listen`): GET /metrics answers the telemetry
 * figures in the Prometheus text exposition format (version 0.0.4); every other path is 404.
 * The figures are measured afresh for each scrape.
 */
export interface MetricsEndpoint {
  port: number;
  close(): Promise<void>;
}

export function serveMetrics(
  listen: { hostname: string; port: number },
  measure: () => MetricPoint[],
): MetricsEndpoint {
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({ hostname: listen.hostname, port: listen.port, onListen: () => {} }, (req) => {
      const path = new URL(req.url).pathname;
      if (path !== "/metrics") return new Response("Not found: the figures are at /metrics\n", { status: 404 });
      if (req.method !== "GET" && req.method !== "HEAD") return new Response(null, { status: 405 });
      return new Response(exposition(measure()), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    });
  } catch (err) {
    throw new Error(
      `Cannot listen on metrics_listen ${JSON.stringify(`${listen.hostname}:${listen.port}`)}: ${
        (err as Error).message
      }`,
    );
  }
  const port = server.addr.transport === "tcp" ? server.addr.port : listen.port;
  logger.info("Prometheus endpoint listening", { url: `http://${listen.hostname}:${port}/metrics` });
  return { port, close: () => server.shutdown() };
}

/** Renders points in the text exposition format, one HELP/TYPE header per metric name. */
export function exposition(points: MetricPoint[]): string {
  const byName = new Map<string, MetricPoint[]>();
  for (const p of points) {
    const list = byName.get(p.name);
    if (list) list.push(p);
    else byName.set(p.name, [p]);
  }
  let out = "";
  for (const [name, list] of [...byName].sort(([a], [b]) => a.localeCompare(b))) {
    out += `# HELP ${name} ${list[0]!.help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")}\n`;
    out += `# TYPE ${name} ${list[0]!.type}\n`;
    for (const p of list) out += `${name}${labelText(p.labels)} ${valueText(p.value)}\n`;
  }
  return out;
}

function labelText(labels: Record<string, string>): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return "";
  const escape = (v: string) => v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
  return `{${keys.map((k) => `${k}="${escape(labels[k]!)}"`).join(",")}}`;
}

function valueText(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
