/**
 * A simulated BMC for tests: OpenIPMI's `ipmi_sim` (Debian package openipmi) serving IPMI 1.5/2.0
 * over UDP on 127.0.0.1 at a free port, with an SDR compiled by `sdrcomp` (peers.md §4). Sensors
 * marked `file` re-read their raw value from a file every second (`poll 1000 file`), so a test
 * changes a reading with `setRaw()`; the others keep the raw value they were given.
 *
 * SDR record IDs are assigned in order: 1 is the management controller locator, then the
 * sensors in the order given, from 2 on. A reading is m × raw × 10^rExp.
 *
 * ipmi_sim echoes privilege 0 in its RMCP+ Open Session reply, so freeipmi needs the workaround
 * flag `opensesspriv` (url query `?workaround_flags=opensesspriv`).
 */
import dgram from "node:dgram";

export interface SimSensor {
  /** Sensor number on the BMC (not the record ID). */
  number: number;
  /** ID string; avoid all-uppercase names, which sdrcomp packs as garbled 6-bit ASCII. */
  name: string;
  type: "Temperature" | "Voltage" | "Fan";
  raw: number;
  m?: number;
  rExp?: number;
  /** Re-read the raw value every second from a file that setRaw() writes. */
  file?: boolean;
  /** A sensor that does not scan reads N/A. Default true. */
  scanning?: boolean;
}

export interface IpmiSimOptions {
  username: string;
  password: string;
  sensors?: SimSensor[];
  /** Serve on this port (to restart a BMC in place); default: a free one. */
  port?: number;
}

export interface IpmiSim {
  port: number;
  pid: number;
  /** Record ID of each sensor, by sensor number. */
  recordId(sensorNumber: number): number;
  setRaw(sensorNumber: number, raw: number): Promise<void>;
  /** Kills the simulator and removes its files; a second call does nothing. */
  stop(): Promise<void>;
}

/** CPU Temp (file-backed, 45 °C), 12V Rail (12.00 V), Fan 1 (3000 RPM), a name with a comma, and an N/A sensor. */
export const DEFAULT_SENSORS: SimSensor[] = [
  { number: 1, name: "CPU Temp", type: "Temperature", raw: 45, file: true },
  { number: 3, name: "12V Rail", type: "Voltage", raw: 200, m: 6, rExp: -2 },
  { number: 4, name: "Fan 1", type: "Fan", raw: 60, m: 50 },
  { number: 5, name: "Inlet, Front", type: "Temperature", raw: 21 },
  { number: 6, name: "Dead Rail", type: "Voltage", raw: 0, scanning: false },
];

const UNITS = { Temperature: "degrees_C", Voltage: "Volts", Fan: "RPM" } as const;
const ENTITIES = { Temperature: "processor", Voltage: "power_supply", Fan: "fan_cooling_device" } as const;

/** A UDP port free at the time of the call (bound, then released). */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    socket.on("error", reject);
    socket.bind(0, "127.0.0.1", () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

export async function startIpmiSim(opts: IpmiSimOptions): Promise<IpmiSim> {
  const dir = await Deno.makeTempDir({ prefix: "kwollector-ipmisim-" });
  try {
    return await start(opts, dir);
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
}

async function start(opts: IpmiSimOptions, dir: string): Promise<IpmiSim> {
  const sensors = opts.sensors ?? DEFAULT_SENSORS;
  const port = opts.port ?? await freeUdpPort();
  const name = "simbmc";
  await Deno.mkdir(`${dir}/state/ipmi_sim/${name}`, { recursive: true });

  const sdrs = [
    "sdr type 18",
    "\tdevice_slave_address 0x20",
    "\tdevice_channel_number 0",
    "\tsel true",
    "\tsdr true",
    "\tsensor true",
    "\tentity_id system_board",
    "\tentity_instance 1",
    '\tid_string "simbmc"',
    "endsdr",
    ...sensors.flatMap((s, i) => [
      "sdr type 1",
      "\tsensor_owner_id 0x20",
      "\tsensor_owner_lun 0",
      "\tchannel_number 0",
      `\tsensor_number ${s.number}`,
      `\tentity_id ${ENTITIES[s.type]}`,
      `\tentity_instance ${i + 1}`,
      `\tsensor_type ${s.type}`,
      "\tevent_reading_type_code 1",
      `\tbase_unit ${UNITS[s.type]}`,
      `\tm ${s.m ?? 1}`,
      ...(s.rExp ? [`\tr_exp ${s.rExp}`] : []),
      ...(s.scanning === false ? [] : ["\tinit_scanning true", "\tdefault_sensor_scan_on true"]),
      `\tid_string "${s.name}"`,
      "endsdr",
    ]),
  ];
  await Deno.writeTextFile(`${dir}/sensors.sdrs`, sdrs.join("\n") + "\n");
  await run("sdrcomp", ["-o", `${dir}/state/ipmi_sim/${name}/sdr.20.main`, `${dir}/sensors.sdrs`]);

  const valueFile = (n: number) => `${dir}/sensor-${n}.val`;
  const emu = ["mc_setbmc 0x20", "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr"];
  for (const s of sensors) {
    if (s.file) {
      await Deno.writeTextFile(valueFile(s.number), `${s.raw}\n`);
      emu.push(`sensor_add 0x20 0 ${s.number} 0x01 0x01 poll 1000 file "${valueFile(s.number)}"`);
    } else {
      emu.push(`sensor_add 0x20 0 ${s.number} 0x01 0x01`);
    }
    // Also for file-backed sensors, which read 0 until their first file poll.
    if (s.scanning !== false) emu.push(`sensor_set_value 0x20 0 ${s.number} ${s.raw} 0`);
  }
  emu.push("mc_enable 0x20");
  await Deno.writeTextFile(`${dir}/bmc.emu`, emu.join("\n") + "\n");

  const auths = "none md2 md5 straight";
  const lan = [
    `name "${name}"`,
    "set_working_mc 0x20",
    "  startlan 1",
    `    addr 127.0.0.1 ${port}`,
    "    priv_limit admin",
    ...["callback", "user", "operator", "admin"].map((level) => `    allowed_auths_${level} ${auths}`),
    "    guid a123456789abcdefa123456789abcdef",
    "  endlan",
    `  user 2 true "${opts.username}" "${opts.password}" admin 10 ${auths}`,
  ];
  await Deno.writeTextFile(`${dir}/lan.conf`, lan.join("\n") + "\n");

  const child = new Deno.Command("ipmi_sim", {
    args: ["-c", `${dir}/lan.conf`, "-f", `${dir}/bmc.emu`, "-s", `${dir}/state`, "-n"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await stderr.catch(() => "");
    await Deno.remove(dir, { recursive: true });
  };
  const exited = child.status.then(() => true);
  const deadline = Date.now() + 10_000;
  while (!(await udpListening(port))) {
    if (await Promise.race([exited, delay(50).then(() => false)]) || Date.now() > deadline) {
      const why = await Promise.race([stderr, delay(200).then(() => "")]);
      await stop(); // removes the directory too
      throw new Error(`ipmi_sim did not start on udp port ${port}: ${why}`);
    }
  }
  return {
    port,
    pid: child.pid,
    recordId(sensorNumber) {
      const i = sensors.findIndex((s) => s.number === sensorNumber);
      if (i < 0) throw new Error(`No simulated sensor number ${sensorNumber}`);
      return i + 2;
    },
    async setRaw(sensorNumber, raw) {
      if (!sensors.find((s) => s.number === sensorNumber)?.file) {
        throw new Error(`Simulated sensor ${sensorNumber} is not file-backed`);
      }
      await Deno.writeTextFile(valueFile(sensorNumber), `${raw}\n`);
    },
    stop,
  };
}

/** Whether something is bound to udp 127.0.0.1:port (read from /proc/net/udp). */
async function udpListening(port: number): Promise<boolean> {
  const text = await Deno.readTextFile("/proc/net/udp");
  const needle = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  return text.split("\n").some((line) => line.trim().split(/\s+/)[1] === needle);
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`${cmd} ${args.join(" ")} failed: ${text}`);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
