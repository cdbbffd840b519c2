/** SP800-108 key derivation in counter mode with HMAC-SHA256, as SMB 3.x derives its session keys. */
import { createHmac } from 'node:crypto';

/**
 * One 128-bit key: HMAC-SHA256(key, i=1 || label || 0x00 || context || L=128), first 16 bytes. `label`
 * and `context` are passed exactly as [MS-SMB2] writes them (labels include their trailing NUL).
 */
export function kdf128(key: Uint8Array, label: Uint8Array, context: Uint8Array): Buffer {
  const counter = Buffer.from([0, 0, 0, 1]);
  const length = Buffer.from([0, 0, 0, 128]);
  return createHmac('sha256', key).update(counter).update(label).update(Buffer.from([0])).update(context).update(length).digest().subarray(0, 16);
}
