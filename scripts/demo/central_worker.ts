/// <reference lib="deno.worker" />
/**
 * The embedded central database runs in its own thread: PGlite executes queries synchronously,
 * and in the demo's main thread it would hold up the simulated devices while it works.
 * Messages: posts `{ port }` once serving, answers "close" with "closed".
 */
import { PGlite } from "@electric-sql/pglite";
import { servePglite } from "./pglite_server.ts";

const db = await PGlite.create();
const server = servePglite(db);
self.onmessage = async (e: MessageEvent) => {
  if (e.data !== "close") return;
  await server.close();
  await db.close();
  self.postMessage("closed");
};
self.postMessage({ port: server.port });
