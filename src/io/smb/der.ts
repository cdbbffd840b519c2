/** The few DER (ASN.1) pieces SPNEGO needs: definite-length TLVs, built and walked with bounds checks. */
import { IoError } from '../../util/errors.js';

/** Encodes one TLV. */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else if (n < 0x100) len = Buffer.from([0x81, n]);
  else if (n < 0x10000) len = Buffer.from([0x82, n >> 8, n & 0xff]);
  else len = Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

/** One decoded TLV: its tag and content. */
export interface Tlv {
  tag: number;
  content: Buffer;
}

/** Splits `b` into its consecutive TLVs (single-byte tags; lengths bounded by `b`). */
export function readTlvs(b: Buffer): Tlv[] {
  const out: Tlv[] = [];
  let p = 0;
  while (p < b.length) {
    if (p + 2 > b.length) throw new IoError('malformed SPNEGO token');
    const tag = b[p];
    let len = b[p + 1];
    p += 2;
    if (len & 0x80) {
      const k = len & 0x7f;
      if (k === 0 || k > 3 || p + k > b.length) throw new IoError('malformed SPNEGO token');
      len = 0;
      for (let i = 0; i < k; i++) len = (len << 8) | b[p + i];
      p += k;
    }
    if (p + len > b.length) throw new IoError('malformed SPNEGO token');
    out.push({ tag, content: b.subarray(p, p + len) });
    p += len;
  }
  return out;
}
