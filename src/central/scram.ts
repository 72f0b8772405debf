/**
 * A SCRAM-SHA-256 password verifier, computed here so that setup-db sends PostgreSQL the verifier
 * (`ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`) and never the password itself: it cannot
 * appear in the server log or pg_stat_activity.
 */
export async function scramVerifier(password: string, iterations = 4096): Promise<string> {
  const enc = new TextEncoder();
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const key = await crypto.subtle.importKey("raw", enc.encode(password.normalize("NFKC")), "PBKDF2", false, [
    "deriveBits",
  ]);
  const salted = new Uint8Array(
    await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, 256),
  );
  const hmac = async (k: Uint8Array<ArrayBuffer>, msg: string) => {
    const hk = await crypto.subtle.importKey("raw", k, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", hk, enc.encode(msg)));
  };
  const clientKey = await hmac(salted, "Client Key");
  const storedKey = new Uint8Array(await crypto.subtle.digest("SHA-256", clientKey));
  const serverKey = await hmac(salted, "Server Key");
  return `SCRAM-SHA-256$${iterations}:${b64(salt)}$${b64(storedKey)}:${b64(serverKey)}`;
}

function b64(bytes: Uint8Array<ArrayBuffer>): string {
  return btoa(String.fromCharCode(...bytes));
}
