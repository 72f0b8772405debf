/**
 * Parses the output of `ipmi-sensors --comma-separated-output --no-header-output` (freeipmi):
 * one sensor per line, `ID,Name,Type,Reading,Units,Event`, e.g.
 *
 *   2,CPU Temp,Temperature,45.00,C,'OK'
 *   5,PSU2 Status,Power Supply,N/A,N/A,'Presence detected' 'Power Supply input lost (AC/DC)'
 *
 * freeipmi does not quote the name, so a name may contain commas ("Inlet, Front"), and the event
 * is either `N/A`, `Unknown`, or quoted messages separated by spaces. A line is therefore read
 * from both ends: the record ID up to the first comma, and `,Type,Reading,Units,Event` as the
 * shortest tail where Type and Units hold no comma, Reading is a number or N/A and Event has one
 * of its three forms; the name is what lies between.
 */

export interface SensorRow {
  /** SDR record ID, the first column (what `--record-ids` selects). */
  recordId: string;
  name: string;
  type: string;
  /** undefined when the reading is `N/A`. */
  reading: number | undefined;
  units: string;
}

export interface SensorOutput {
  rows: SensorRow[];
  /** Non-empty lines that did not have the expected shape. */
  malformed: string[];
}

const LINE_RE = /^(\d+),(.*?),([^,]*),(-?\d+(?:\.\d+)?|N\/A),([^,]*),(N\/A|Unknown|'.*')$/;

export function parseSensorOutput(text: string): SensorOutput {
  const rows: SensorRow[] = [];
  const malformed: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (line === "") continue;
    const m = LINE_RE.exec(line);
    if (!m) {
      malformed.push(line);
      continue;
    }
    const [, recordId = "", name = "", type = "", reading = "", units = ""] = m;
    rows.push({
      recordId,
      name: name.trim(),
      type,
      reading: reading === "N/A" ? undefined : Number(reading),
      units,
    });
  }
  return { rows, malformed };
}
