/**
 * snmpsim (Debian's `snmpsim` package) serving real PDU recordings on 127.0.0.1 at a free UDP
 * port. The recordings are copied from the shared test data (never into the project) into a temp
 * data directory readable by `nobody`, since snmpsimd drops root privileges. The SNMP v2c
 * community selects the recording: its file name without `.snmprec`.
 */
import { freeUdpPort, startUdpDaemon, tail } from "./snmpd.ts";

/** shared/testdata/snmprec in the nearest parent of the checkout (a worktree sits one level deeper). */
export const SNMPREC_DIR = findSnmprecDir();

function findSnmprecDir(): string {
  for (let up = "../../../"; up.length < 40; up += "../") {
    const dir = new URL(`${up}shared/testdata/snmprec/`, import.meta.url).pathname;
    try {
      if (Deno.statSync(dir).isDirectory) return dir;
    } catch { /* not at this level */ }
  }
  return new URL("../../../shared/testdata/snmprec/", import.meta.url).pathname;
}

export interface Snmpsim {
  port: number;
  pid: number;
  /** Communities served, one per recording. */
  communities: string[];
  stop(): Promise<void>;
}

export async function startSnmpsim(recordings: readonly string[]): Promise<Snmpsim> {
  const port = await freeUdpPort();
  const dir = await Deno.makeTempDir({ prefix: "kwollector-snmpsim-" });
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/data`, { mode: 0o755 });
  await Deno.mkdir(`${dir}/cache`, { mode: 0o777 });
  await Deno.chmod(`${dir}/cache`, 0o777);
  for (const name of recordings) {
    await Deno.copyFile(`${SNMPREC_DIR}/${name}.snmprec`, `${dir}/data/${name}.snmprec`);
    await Deno.chmod(`${dir}/data/${name}.snmprec`, 0o644);
  }
  const { pid, stop } = await startUdpDaemon({
    command: "snmpsimd",
    args: [
      `--data-dir=${dir}/data`,
      `--cache-dir=${dir}/cache`,
      `--agent-udpv4-endpoint=127.0.0.1:${port}`,
      "--process-user=nobody",
      "--process-group=nogroup",
      `--logging-method=file:${dir}/cache/snmpsim.log`,
    ],
    port,
    dir,
    log: tail(`${dir}/cache/snmpsim.log`),
  });
  return { port, pid, communities: [...recordings], stop };
}
