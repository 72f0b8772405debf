/**
 * Reads a SQLite WAL file the way SQLite's recovery does (https://www.sqlite.org/fileformat.html,
 * "The WAL file format"): the header, then frames whose salts match the header and whose
 * cumulative checksums hold. Frames after the last commit frame belong to a transaction that was
 * being written when the process died: SQLite ignores them, and to a kill test they prove that the
 * kill landed inside a spool transaction.
 */
export interface WalState {
  /** Valid frames (salts and checksum chain intact). */
  frames: number;
  /** Valid frames up to and including the last commit frame. */
  committedFrames: number;
  /** Valid frames after the last commit frame: an interrupted transaction. */
  uncommittedFrames: number;
}

const HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;

export function readWal(bytes: Uint8Array): WalState {
  const none = { frames: 0, committedFrames: 0, uncommittedFrames: 0 };
  if (bytes.length < HEADER_BYTES) return none;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (magic !== 0x377f0682 && magic !== 0x377f0683) return none;
  // The magic's low bit says in which byte order the checksum reads its 32-bit words.
  const bigEndian = (magic & 1) === 1;
  const pageSize = view.getUint32(8);
  const salt1 = view.getUint32(16);
  const salt2 = view.getUint32(20);
  let sum = checksum(view, 0, 24, [0, 0], bigEndian);
  if (sum[0] !== view.getUint32(24) || sum[1] !== view.getUint32(28)) return none;
  let frames = 0;
  let committedFrames = 0;
  for (
    let off = HEADER_BYTES;
    off + FRAME_HEADER_BYTES + pageSize <= bytes.length;
    off += FRAME_HEADER_BYTES + pageSize
  ) {
    if (view.getUint32(off + 8) !== salt1 || view.getUint32(off + 12) !== salt2) break;
    sum = checksum(view, off, 8, sum, bigEndian);
    sum = checksum(view, off + FRAME_HEADER_BYTES, pageSize, sum, bigEndian);
    if (sum[0] !== view.getUint32(off + 16) || sum[1] !== view.getUint32(off + 20)) break;
    frames++;
    // Bytes 4-7: the database size after a commit frame, zero in the other frames.
    if (view.getUint32(off + 4) !== 0) committedFrames = frames;
  }
  return { frames, committedFrames, uncommittedFrames: frames - committedFrames };
}

/** SQLite's WAL checksum: Fibonacci-weighted sums of 32-bit word pairs, continuing from `start`. */
function checksum(
  view: DataView,
  offset: number,
  length: number,
  start: [number, number],
  bigEndian: boolean,
): [number, number] {
  let [s0, s1] = start;
  for (let i = offset; i < offset + length; i += 8) {
    s0 = (s0 + view.getUint32(i, !bigEndian) + s1) >>> 0;
    s1 = (s1 + view.getUint32(i + 4, !bigEndian) + s0) >>> 0;
  }
  return [s0, s1];
}
