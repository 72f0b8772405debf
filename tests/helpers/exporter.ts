/**
 * A Prometheus exporter for tests whose value counts its own scrapes: every served value is
 * recorded, so a test can check that each one reached the central table exactly once.
 */
export interface CountingExporter {
  port: number;
  /** Values served so far, in order (1, 2, 3, ...). */
  served(): number;
  close(): Promise<void>;
}

export function startCountingExporter(opts: { extra?: string } = {}): CountingExporter {
  let count = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    count++;
    const body = [
      "# HELP scrape_count Scrapes served by this exporter",
      "# TYPE scrape_count counter",
      `scrape_count ${count}`,
      opts.extra ?? "",
    ].join("\n");
    return new Response(body + "\n", { headers: { "content-type": "text/plain; version=0.0.4" } });
  });
  return {
    port: server.addr.port,
    served: () => count,
    close: () => server.shutdown(),
  };
}
