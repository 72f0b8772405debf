/**
 * Self-signed certificates for the peers that speak TLS (the test PostgreSQL's CA, a fake BMC's
 * factory certificate), made with openssl: a 2048-bit RSA key without a passphrase.
 */
export async function selfSignedCertificate(opts: {
  keyFile: string;
  certFile: string;
  /** e.g. `/CN=kwollector test CA`. */
  subject: string;
  days: number;
  /** e.g. `IP:127.0.0.1`. */
  subjectAltName?: string;
}): Promise<void> {
  const args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", opts.keyFile, "-out", opts.certFile];
  args.push("-days", String(opts.days), "-subj", opts.subject);
  if (opts.subjectAltName !== undefined) args.push("-addext", `subjectAltName=${opts.subjectAltName}`);
  const out = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
}
