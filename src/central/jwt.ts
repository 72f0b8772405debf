/** HS256 JSON Web Tokens, as PostgREST verifies them with its jwt-secret. */
export async function signJwt(payload: Record<string, unknown>, secret: string): Promise<string> {
  const enc = new TextEncoder();
  const header = b64url(enc.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const body = b64url(enc.encode(JSON.stringify(payload)));
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${header}.${body}`)));
  return `${header}.${body}.${b64url(sig)}`;
}

/** Verifies an HS256 token and returns its payload, or undefined when forged or expired. */
export async function verifyJwt(
  token: string,
  secret: string,
  nowS = Date.now() / 1000,
): Promise<Record<string, unknown> | undefined> {
  const [header, body, sig] = token.split(".");
  if (!header || !body || !sig) return undefined;
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "verify",
  ]);
  const ok = await crypto.subtle.verify("HMAC", key, fromB64url(sig), enc.encode(`${header}.${body}`));
  if (!ok) return undefined;
  const payload = JSON.parse(new TextDecoder().decode(fromB64url(body))) as Record<string, unknown>;
  if (typeof payload.exp === "number" && payload.exp < nowS) return undefined;
  return payload;
}

export function b64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromB64url(text: string): Uint8Array<ArrayBuffer> {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}
