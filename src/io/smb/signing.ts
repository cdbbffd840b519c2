/** Message signing ([MS-SMB2] 3.1.4.1, 3.1.5.1): HMAC-SHA256 (2.x), AES-CMAC (3.x), AES-GMAC (3.1.1 negotiated). */
import { createCipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { aesCmac } from './aes-cmac.js';
import { HeaderFlags } from './header.js';
import { SigningAlgorithm } from './negotiate.js';

const SIG_AT = 48;
const ZERO_SIG = Buffer.alloc(16);

/** The 16-byte signature of a message whose signature field is zero; `parts` concatenate to the message. */
export function computeSignature(algorithm: number, key: Buffer, parts: Uint8Array[], messageId: number, fromServer: boolean): Buffer {
  if (algorithm === SigningAlgorithm.HMAC_SHA256) {
    const h = createHmac('sha256', key);
    for (const p of parts) h.update(p);
    return h.digest().subarray(0, 16);
  }
  if (algorithm === SigningAlgorithm.AES_CMAC) return aesCmac(key, ...parts);
  // AES-GMAC: GCM with the whole message as AAD; nonce = MessageId, then a role bit (we never sign CANCEL).
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(BigInt(messageId), 0);
  if (fromServer) nonce[8] = 1;
  const c = createCipheriv('aes-128-gcm', key, nonce);
  for (const p of parts) c.setAAD(p);
  c.final();
  return c.getAuthTag();
}

/** Signs an outgoing message in place: sets SMB2_FLAGS_SIGNED and fills the signature of `parts[0]`, the header. */
export function signMessage(algorithm: number, key: Buffer, parts: Buffer[], messageId: number): void {
  const header = parts[0];
  header.writeUInt32LE((header.readUInt32LE(16) | HeaderFlags.SIGNED) >>> 0, 16);
  ZERO_SIG.copy(header, SIG_AT);
  computeSignature(algorithm, key, parts, messageId, false).copy(header, SIG_AT);
}

/** True when a received message (one, not a compound chain; `tail` continues `msg`) carries a valid signature. */
export function verifyMessage(algorithm: number, key: Buffer, msg: Buffer, messageId: number, tail?: Buffer): boolean {
  const sig = Buffer.from(msg.subarray(SIG_AT, SIG_AT + 16));
  const parts = [msg.subarray(0, SIG_AT), ZERO_SIG, msg.subarray(SIG_AT + 16)];
  if (tail) parts.push(tail);
  return timingSafeEqual(sig, computeSignature(algorithm, key, parts, messageId, true));
}
