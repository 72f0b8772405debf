/**
 * A private network for power-loss tests: the central side's address on a bridge of the root
 * namespace (the test's PostgreSQL and exporter listen there), and edges, each a network
 * namespace plugged into the bridge by its own veth pair, where a collector runs. An edge can be cut (its
 * link taken down: no packet passes either way, as with a pulled cable or a dead host) and
 * removed (the namespace and its pair deleted, with every socket the collector had: nothing ever
 * tells the server). Every edge has its own address, so the server's probes of a dead edge go
 * unanswered, as after a power loss.
 *
 * Everything is created by `createPrivateNetwork` and deleted by `close()` (root needed), under
 * names and a 10.231.x.0/24 subnet chosen at random so concurrent tests do not collide.
 */

export interface Edge {
  /** Network namespace name (for `ip netns exec`). */
  name: string;
  ip: string;
  /** Takes the link down: from now on nothing passes between the edge and the central side. */
  cut(): Promise<void>;
  /** Deletes the namespace and its veth pair. */
  remove(): Promise<void>;
}

export interface PrivateNetwork {
  /** The central side's address. */
  centralIp: string;
  /** The edges' addresses (CIDR), for pg_hba. */
  edges: string;
  addEdge(): Promise<Edge>;
  close(): Promise<void>;
}

async function ip(...args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`ip ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
}

async function linkExists(name: string): Promise<boolean> {
  return (await new Deno.Command("ip", { args: ["link", "show", name], stdout: "null", stderr: "null" }).output())
    .success;
}

async function subnetInUse(prefix: string): Promise<boolean> {
  const out = await new Deno.Command("ip", { args: ["-o", "-4", "addr", "show"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).includes(` ${prefix}.`);
}

export async function createPrivateNetwork(): Promise<PrivateNetwork> {
  const id = crypto.getRandomValues(new Uint16Array(1))[0]!.toString(16).padStart(4, "0");
  let prefix = "";
  for (let tries = 0; tries < 20 && prefix === ""; tries++) {
    const candidate = `10.231.${crypto.getRandomValues(new Uint8Array(1))[0]!}`;
    if (!await subnetInUse(candidate)) prefix = candidate;
  }
  if (prefix === "") throw new Error("No free 10.231.x.0/24 subnet for a private network");
  const bridge = `kw${id}c`;
  const centralIp = `${prefix}.1`;
  await ip("link", "add", bridge, "type", "bridge");
  /** Namespace → its veth end in the root namespace. */
  const edges = new Map<string, string>();
  let next = 0;
  const removeEdge = async (ns: string) => {
    const host = edges.get(ns);
    if (host === undefined) return;
    edges.delete(ns);
    await ip("netns", "del", ns);
    // The kernel keeps a deleted namespace (and so the pair) until the dead collector's sockets
    // time out: delete the pair now.
    if (await linkExists(host)) await ip("link", "del", host);
  };
  try {
    await ip("addr", "add", `${centralIp}/24`, "dev", bridge);
    await ip("link", "set", bridge, "up");
  } catch (err) {
    await ip("link", "del", bridge);
    throw err;
  }
  return {
    centralIp,
    edges: `${prefix}.0/24`,
    async addEdge() {
      const k = next++;
      if (k > 200) throw new Error("Too many edges on one private network");
      const ns = `kw${id}e${k}`;
      const host = `kw${id}h${k}`;
      const inner = `kw${id}n${k}`;
      const edgeIp = `${prefix}.${10 + k}`;
      await ip("netns", "add", ns);
      edges.set(ns, host);
      try {
        await ip("link", "add", host, "type", "veth", "peer", "name", inner, "netns", ns);
        await ip("link", "set", host, "master", bridge);
        await ip("link", "set", host, "up");
        await ip("-n", ns, "link", "set", "lo", "up");
        await ip("-n", ns, "addr", "add", `${edgeIp}/24`, "dev", inner);
        await ip("-n", ns, "link", "set", inner, "up");
      } catch (err) {
        await removeEdge(ns);
        throw err;
      }
      return {
        name: ns,
        ip: edgeIp,
        cut: () => ip("link", "set", host, "down"),
        remove: () => removeEdge(ns),
      };
    },
    async close() {
      for (const ns of [...edges.keys()]) await removeEdge(ns);
      await ip("link", "del", bridge);
    },
  };
}
