/**
 * A fake Redfish BMC for tests, since no real BMC can run here. It speaks the real protocol the
 * source relies on: HTTPS with a self-signed certificate made by openssl (or plain HTTP), HTTP
 * basic authentication answered by 401 and a Redfish error body, DMTF-shaped Thermal and Power
 * resources under /redfish/v1/Chassis/1, an HPE-style FastPowerMeter history, 404 with a Redfish
 * error for unknown resources, and the HTML login page a BMC serves at "/". It listens on
 * 127.0.0.1 at a free port and counts requests per path and client connections. Tests can
 * replace the answer of a path (`answers`) to serve a hostile body: chunked, compressed, huge or
 * deeply nested.
 */

import { selfSignedCertificate } from "./certificates.ts";

export interface FakeBmcOptions {
  tls?: boolean;
  user?: string;
  password?: string;
  /** subjectAltName of the self-signed certificate; the default names 127.0.0.1. */
  subjectAltName?: string;
}

export interface FakeBmc {
  port: number;
  user: string;
  password: string;
  /** The BMC's self-signed certificate (PEM file). */
  certFile: string;
  /** Documents served (path → JSON), editable by tests. */
  documents: Map<string, unknown>;
  /** Milliseconds to wait before answering a path (a slow BMC). */
  delays: Map<string, number>;
  /** Answers that replace the document of a path, once the client is authenticated. */
  answers: Map<string, () => Response>;
  /** Requests received per path, whatever the answer. */
  requests: Map<string, number>;
  /** Distinct client connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

const CHASSIS = "/redfish/v1/Chassis/1";

export function redfishDocuments(): Map<string, unknown> {
  return new Map<string, unknown>([
    ["/redfish/v1", {
      "@odata.context": "/redfish/v1/$metadata#ServiceRoot.ServiceRoot",
      "@odata.id": "/redfish/v1",
      "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
      Id: "RootService",
      Name: "Root Service",
      RedfishVersion: "1.6.0",
      Chassis: { "@odata.id": "/redfish/v1/Chassis" },
      SessionService: { "@odata.id": "/redfish/v1/SessionService" },
    }],
    [`${CHASSIS}/Thermal`, {
      "@odata.context": "/redfish/v1/$metadata#Thermal.Thermal",
      "@odata.id": `${CHASSIS}/Thermal`,
      "@odata.type": "#Thermal.v1_7_0.Thermal",
      Id: "Thermal",
      Name: "Thermal",
      Temperatures: [
        {
          "@odata.id": `${CHASSIS}/Thermal#/Temperatures/0`,
          MemberId: "0",
          Name: "01-Inlet Ambient",
          SensorNumber: 1,
          PhysicalContext: "Intake",
          ReadingCelsius: 21,
          UpperThresholdCritical: 42,
          UpperThresholdFatal: 46,
          Status: { State: "Enabled", Health: "OK" },
        },
        {
          "@odata.id": `${CHASSIS}/Thermal#/Temperatures/1`,
          MemberId: "1",
          Name: "02-CPU 1",
          SensorNumber: 2,
          PhysicalContext: "CPU",
          ReadingCelsius: 40.5,
          UpperThresholdCritical: 70,
          Status: { State: "Enabled", Health: "OK" },
        },
        {
          "@odata.id": `${CHASSIS}/Thermal#/Temperatures/2`,
          MemberId: "2",
          Name: "03-CPU 2",
          SensorNumber: 3,
          PhysicalContext: "CPU",
          ReadingCelsius: null,
          Status: { State: "Absent" },
        },
      ],
      Fans: [
        {
          "@odata.id": `${CHASSIS}/Thermal#/Fans/0`,
          MemberId: "0",
          Name: "Fan 1",
          PhysicalContext: "SystemBoard",
          Reading: 23,
          ReadingUnits: "Percent",
          Status: { State: "Enabled", Health: "OK" },
        },
      ],
    }],
    [`${CHASSIS}/Power`, {
      "@odata.context": "/redfish/v1/$metadata#Power.Power",
      "@odata.id": `${CHASSIS}/Power`,
      "@odata.type": "#Power.v1_7_1.Power",
      Id: "Power",
      Name: "Power",
      PowerControl: [{
        "@odata.id": `${CHASSIS}/Power#/PowerControl/0`,
        MemberId: "0",
        Name: "System Power Control",
        PowerConsumedWatts: 187,
        PowerCapacityWatts: 1600,
        PowerMetrics: {
          IntervalInMin: 20,
          MinConsumedWatts: 160,
          MaxConsumedWatts: 241,
          AverageConsumedWatts: "190.5",
        },
        Status: { State: "Enabled", Health: "OK" },
      }],
      PowerSupplies: [
        {
          "@odata.id": `${CHASSIS}/Power#/PowerSupplies/0`,
          MemberId: "0",
          Name: "HpeServerPowerSupply",
          LastPowerOutputWatts: 95,
          LineInputVoltage: 229,
          PowerCapacityWatts: 800,
          Status: { State: "Enabled", Health: "OK" },
        },
        {
          "@odata.id": `${CHASSIS}/Power#/PowerSupplies/1`,
          MemberId: "1",
          Name: "HpeServerPowerSupply",
          LastPowerOutputWatts: 92,
          LineInputVoltage: 231,
          PowerCapacityWatts: 800,
          Status: { State: "Enabled", Health: "OK" },
        },
      ],
      Redundancy: [{ MemberId: "0", Mode: "N+m", Name: "PowerSupply Redundancy Group 1", RedundancyEnabled: true }],
    }],
    [`${CHASSIS}/Power/FastPowerMeter`, {
      "@odata.context": "/redfish/v1/$metadata#HpePowerMeter.HpePowerMeter",
      "@odata.id": `${CHASSIS}/Power/FastPowerMeter`,
      "@odata.type": "#HpePowerMeter.v2_0_0.HpePowerMeter",
      Id: "FastPowerMeter",
      Name: "Fast Power Meter",
      N: 3,
      PowerDetail: [
        { Time: "2026-01-01T10:00:00Z", Average: 181, Minimum: 176, Peak: 190, AmbTemp: 21, CpuMax: 39 },
        { Time: "2026-01-01T10:00:20Z", Average: 185, Minimum: 178, Peak: 201, AmbTemp: 21, CpuMax: 40 },
        { Time: "2026-01-01T10:00:40Z", Average: 192, Minimum: 180, Peak: 214, AmbTemp: 21, CpuMax: 41 },
      ],
    }],
  ]);
}

const LOGIN_PAGE = "<!DOCTYPE html><html><head><title>iLO Login</title></head><body>Login</body></html>";

function redfishError(code: string, message: string): string {
  return JSON.stringify({
    error: {
      code: `Base.1.8.${code}`,
      message,
      "@Message.ExtendedInfo": [{ MessageId: `Base.1.8.${code}`, Message: message, Severity: "Critical" }],
    },
  });
}

export async function startFakeBmc(opts: FakeBmcOptions = {}): Promise<FakeBmc> {
  const user = opts.user ?? "admin";
  const password = opts.password ?? "s3cret-bmc-pass";
  const dir = await Deno.makeTempDir({ prefix: "kwollector-bmc-" });
  const certFile = `${dir}/bmc.crt`;
  const keyFile = `${dir}/bmc.key`;
  // As a BMC's factory certificate: self-signed, and (openssl's default) marked as a CA.
  await selfSignedCertificate({
    keyFile,
    certFile,
    subject: "/O=Hewlett Packard Enterprise/CN=ILO-CZ1234ABCD",
    days: 2,
    subjectAltName: opts.subjectAltName ?? "IP:127.0.0.1",
  });
  const expected = `Basic ${btoa(`${user}:${password}`)}`;
  const documents = redfishDocuments();
  const delays = new Map<string, number>();
  const answers = new Map<string, () => Response>();
  const requests = new Map<string, number>();
  const peers = new Set<string>();
  const stop = new AbortController();

  const handler = async (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> => {
    const path = new URL(req.url).pathname.replace(/\/$/, "") || "/";
    peers.add(`${info.remoteAddr.hostname}:${info.remoteAddr.port}`);
    requests.set(path, (requests.get(path) ?? 0) + 1);
    const delay = delays.get(path);
    if (delay) await abortableSleep(delay, stop.signal);
    const json = { "content-type": "application/json;charset=utf-8", "odata-version": "4.0" };
    if (path === "/") return new Response(LOGIN_PAGE, { headers: { "content-type": "text/html" } });
    if (req.method !== "GET") {
      return new Response(redfishError("ActionNotSupported", `${req.method} is not allowed`), {
        status: 405,
        headers: json,
      });
    }
    if (req.headers.get("authorization") !== expected) {
      return new Response(redfishError("InsufficientPrivilege", "Authentication required"), {
        status: 401,
        headers: { ...json, "www-authenticate": 'Basic realm="Redfish"' },
      });
    }
    const answer = answers.get(path);
    if (answer) return answer();
    const doc = documents.get(path);
    if (doc === undefined) {
      return new Response(redfishError("ResourceMissingAtURI", `The resource at the URI ${path} was not found`), {
        status: 404,
        headers: json,
      });
    }
    return new Response(JSON.stringify(doc), { headers: { ...json, etag: `W/"${crypto.randomUUID()}"` } });
  };

  const serveOpts = { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen() {} };
  const server = opts.tls === false ? Deno.serve(serveOpts, handler) : Deno.serve(
    { ...serveOpts, cert: await Deno.readTextFile(certFile), key: await Deno.readTextFile(keyFile) },
    handler,
  );
  return {
    port: server.addr.port,
    user,
    password,
    certFile,
    documents,
    delays,
    answers,
    requests,
    connections: () => peers.size,
    async close() {
      stop.abort();
      await server.finished;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A TCP peer that accepts connections and never answers (a hung BMC). */
export function startSilentPeer(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    try {
      for await (const conn of listener) held.push(conn);
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      listener.close();
      for (const c of held) {
        try {
          c.close();
        } catch {
          // already closed by the client
        }
      }
    },
  };
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
