import { randomBytes } from 'node:crypto';

/** The 16 bytes of an all-zero GUID. */
export const ZERO_GUID = Buffer.alloc(16);

/**
 * Formats 16 bytes in Microsoft's GUID layout (first three fields little-endian), as VHDX stores
 * GUIDs and as Hyper-V and libvhdi print them.
 */
export function formatGuidLE(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, 16);
  const hex = (buf: Buffer) => buf.toString('hex');
  const rev = (s: number, e: number) => hex(Buffer.from(b.subarray(s, e)).reverse());
  return `${rev(0, 4)}-${rev(4, 6)}-${rev(6, 8)}-${hex(b.subarray(8, 10))}-${hex(b.subarray(10, 16))}`;
}

/** Formats 16 bytes in plain byte order (RFC 4122 layout), as VHD's UniqueId is usually printed. */
export function formatGuidBE(bytes: Uint8Array): string {
  const h = Buffer.from(bytes.buffer, bytes.byteOffset, 16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const GUID_RE = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

/** True when `text` looks like a GUID, with or without braces. */
export function isGuidText(text: string): boolean {
  return GUID_RE.test(text.trim());
}

/** Parses `xxxxxxxx-xxxx-...` (braces optional) into Microsoft's little-endian GUID layout. */
export function parseGuidLE(text: string): Buffer {
  const m = GUID_RE.exec(text.trim());
  if (!m) throw new Error(`not a GUID: ${text}`);
  const le = (h: string) => Buffer.from(h, 'hex').reverse();
  return Buffer.concat([le(m[1]), le(m[2]), le(m[3]), Buffer.from(m[4] + m[5], 'hex')]);
}

/** Parses a GUID string into plain byte order. */
export function parseGuidBE(text: string): Buffer {
  const m = GUID_RE.exec(text.trim());
  if (!m) throw new Error(`not a GUID: ${text}`);
  return Buffer.from(m.slice(1).join(''), 'hex');
}

/** A new random (version 4) GUID as 16 bytes. */
export function newGuid(): Buffer {
  const b = randomBytes(16);
  b[7] = (b[7] & 0x0f) | 0x40; // version nibble sits in the high byte of the LE third field
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

/** True when two GUID byte arrays are equal. */
export function guidEquals(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}
