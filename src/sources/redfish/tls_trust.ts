import net from "node:net";
import tls from "node:tls";
import { pinEndpoint, type TlsPin, type TlsPins } from "../../spool/tls_pins.ts";

/**
 * The TLS connections of https metric urls, checked before a single HTTP byte is sent on them,
 * so a BMC's credentials only ever leave over a connection whose certificate passed:
 *
 * - `tofu` (trust on first use, the default): the certificate is not checked against any CA
 *   (BMC certificates are self-signed); its SHA-256 fingerprint must equal the pin of the
 *   endpoint (`host:port`). An endpoint without a pin is accepted (first use) and the caller pins
 *   it after its first successful document. A different certificate fails with
 *   CertificateChangedError, which names the endpoint, both fingerprints and the command that
 *   accepts the new one; the connection is closed without sending anything.
 * - `full`: the chain must lead to a trusted root (the built-in roots, or `redfish_ca_file`) and
 *   the certificate must name the host; `ca`: the chain only; `none`: nothing is checked.
 *
 * Fingerprints are written as openssl and node:tls print them (`AB:CD:...`), so an operator can
 * compare them with `openssl x509 -noout -fingerprint -sha256`.
 */

export type TlsVerify = "tofu" | "full" | "ca" | "none";

export interface TrustPolicy {
  verify: TlsVerify;
  /** PEM certificates trusted instead of the built-in roots (full, ca). */
  ca: string[] | undefined;
  pins: TlsPins;
}

export interface PresentedCertificate {
  fingerprint256: string;
  subject: string;
  validTo: string;
}

export class CertificateChangedError extends Error {
  readonly endpoint: string;
  readonly pinned: TlsPin;
  readonly presented: PresentedCertificate;

  constructor(endpoint: string, pinned: TlsPin, presented: PresentedCertificate) {
    super(
      `TLS certificate of ${endpoint} changed: pinned ${pinned.fingerprint256} (${pinned.subject}, pinned ${
        new Date(pinned.pinnedAtMs).toISOString()
      }), presented ${presented.fingerprint256} (${presented.subject}); nothing was sent to it. ` +
        `If the certificate was replaced on purpose, accept it with: ` +
        `kwollector trust [CONFIG] ${endpoint} --fingerprint ${presented.fingerprint256}`,
    );
    this.name = "CertificateChangedError";
    this.endpoint = endpoint;
    this.pinned = pinned;
    this.presented = presented;
  }
}

/**
 * Opens a TLS connection and checks it under `policy`. Resolves with the connection once it
 * passed, and under `tofu` for an endpoint not yet pinned, the pin to record after a successful
 * request (`firstUse`). `started` receives the socket at once, so its owner can destroy it if
 * the poll is aborted during the handshake.
 */
export function connectTrusted(
  host: string,
  port: number,
  policy: TrustPolicy,
  started: (socket: tls.TLSSocket) => void = () => {},
): Promise<{ socket: tls.TLSSocket; firstUse: TlsPin | undefined }> {
  const endpoint = pinEndpoint(host, port);
  const options: tls.ConnectionOptions = {
    host,
    port,
    ...(net.isIP(host) === 0 && { servername: host }),
    ...(policy.ca && { ca: policy.ca }),
    rejectUnauthorized: policy.verify === "full" || policy.verify === "ca",
    ...(policy.verify === "ca" && { checkServerIdentity: () => undefined }),
  };
  return new Promise((resolve, reject) => {
    const socket = tls.connect(options);
    started(socket);
    const onClose = () => reject(new Error(`TLS connection to ${endpoint} closed during the handshake`));
    socket.once("error", reject);
    socket.once("close", onClose);
    socket.once("secureConnect", () => {
      socket.off("error", reject);
      socket.off("close", onClose);
      if (policy.verify !== "tofu") return resolve({ socket, firstUse: undefined });
      const presented = presentedCertificate(socket);
      let pin: TlsPin | undefined;
      try {
        pin = policy.pins.get(endpoint);
      } catch (err) {
        socket.destroy();
        return reject(new Error(`Cannot read the TLS certificate pin of ${endpoint}: ${(err as Error).message}`));
      }
      if (pin === undefined) {
        return resolve({ socket, firstUse: { endpoint, ...presented, pinnedAtMs: Date.now() } });
      }
      if (pin.fingerprint256 === presented.fingerprint256) return resolve({ socket, firstUse: undefined });
      socket.destroy();
      reject(new CertificateChangedError(endpoint, pin, presented));
    });
  });
}

/** The certificate `host:port` presents, without checking it and without sending anything else. */
export function fetchCertificate(host: string, port: number, timeoutMs: number): Promise<PresentedCertificate> {
  const endpoint = pinEndpoint(host, port);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      ...(net.isIP(host) === 0 && { servername: host }),
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`No TLS handshake with ${endpoint} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`Cannot connect to ${endpoint}: ${err.message}`));
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const presented = presentedCertificate(socket);
      socket.destroy();
      resolve(presented);
    });
  });
}

function presentedCertificate(socket: tls.TLSSocket): PresentedCertificate {
  const cert = socket.getPeerCertificate();
  const subject = cert.subject ? Object.entries(cert.subject).map(([k, v]) => `${k}=${v}`).join(", ") : "";
  return { fingerprint256: cert.fingerprint256 ?? "", subject: subject || "no subject", validTo: cert.valid_to ?? "" };
}
