/** XAPI chunked frames applied the way vhd-tool's reader applies them, written here from the notes, not from src/. */

/** Applies frames ({offset u64 LE, length u32 LE} then data, ended by an all-zero header) onto a copy of `onto`. */
export function applyFrames(frames: Buffer, onto: Buffer): Buffer {
  const out = Buffer.from(onto);
  for (let at = 0; ; ) {
    const offset = Number(frames.readBigUInt64LE(at));
    const len = frames.readUInt32LE(at + 8);
    at += 12;
    if (offset === 0 && len === 0) {
      if (at !== frames.length) throw new Error(`${frames.length - at} bytes after the end marker`);
      return out;
    }
    if (len === 0) throw new Error(`empty frame at byte ${at - 12}`);
    if (offset + len > out.length) throw new Error(`frame ${offset}+${len} past the disk's end ${out.length}`);
    frames.copy(out, offset, at, at + len);
    at += len;
  }
}
