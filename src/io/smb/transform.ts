/** The SMB2 TRANSFORM_HEADER ([MS-SMB2] 2.2.41) and AES-128-GCM/CCM message encryption (3.1.4.3, 3.2.5.1.1.1). */
import { createCipheriv, createDecipheriv, randomBytes, type CipherCCM, type CipherGCM, type DecipherCCM, type DecipherGCM } from 'node:crypto';
import { IoError } from '../../util/errors.js';
import { Cipher } from './negotiate.js';

export const TRANSFORM_SIZE = 52;
const PROTOCOL_ID = 0x424d53fd; // 0xFD 'S' 'M' 'B'

/** True when a frame starts with a transform header. */
export function isTransformed(frame: Buffer): boolean {
  return frame.length >= 4 && frame.readUInt32LE(0) === PROTOCOL_ID;
}

/** Produces unique nonces for one key: a random prefix and a counter, never repeating within a session. */
export class NonceSource {
  private counter = 0n;
  private readonly prefix = randomBytes(4);
  /** The next 16-byte nonce field (only the first 11 or 12 bytes are used). */
  next(): Buffer {
    const n = Buffer.alloc(16);
    n.writeBigUInt64LE(this.counter++, 0);
    this.prefix.copy(n, 8, 0, 3);
    return n;
  }
}

const nonceLength = (cipher: number) => (cipher === Cipher.AES128_CCM ? 11 : 12);

function encryptor(cipher: number, key: Buffer, nonce: Buffer): CipherCCM | CipherGCM {
  const iv = nonce.subarray(0, nonceLength(cipher));
  if (cipher === Cipher.AES128_CCM) return createCipheriv('aes-128-ccm', key, iv, { authTagLength: 16 });
  if (cipher === Cipher.AES128_GCM) return createCipheriv('aes-128-gcm', key, iv);
  throw new IoError(`unsupported SMB cipher ${cipher}`);
}

function decryptor(cipher: number, key: Buffer, nonce: Buffer): DecipherCCM | DecipherGCM {
  const iv = nonce.subarray(0, nonceLength(cipher));
  if (cipher === Cipher.AES128_CCM) return createDecipheriv('aes-128-ccm', key, iv, { authTagLength: 16 });
  if (cipher === Cipher.AES128_GCM) return createDecipheriv('aes-128-gcm', key, iv);
  throw new IoError(`unsupported SMB cipher ${cipher}`);
}

/** Encrypts the message `parts` into [transform header, ciphertext]. */
export function encryptMessage(cipher: number, key: Buffer, sessionId: bigint, nonce: Buffer, parts: Buffer[]): Buffer[] {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const th = Buffer.alloc(TRANSFORM_SIZE);
  th.writeUInt32LE(PROTOCOL_ID, 0);
  nonce.copy(th, 20, 0, nonceLength(cipher));
  th.writeUInt32LE(size, 36);
  th.writeUInt16LE(1, 42); // Flags: encrypted
  th.writeBigUInt64LE(sessionId, 44);
  const c = encryptor(cipher, key, th.subarray(20, 36));
  // The AAD is the transform header from the nonce on.
  c.setAAD(th.subarray(20), { plaintextLength: size });
  // CCM takes its plaintext in one piece.
  const out = cipher === Cipher.AES128_CCM ? [c.update(Buffer.concat(parts))] : parts.map((p) => c.update(p));
  out.push(c.final());
  c.getAuthTag().copy(th, 4);
  return [th, ...out];
}

/** Decrypts a transformed frame, checking its tag and session; returns the plain SMB2 message(s). */
export function decryptMessage(cipher: number, key: Buffer, sessionId: bigint, frame: Buffer): Buffer {
  if (frame.length < TRANSFORM_SIZE) throw new IoError('malformed encrypted SMB message');
  const size = frame.readUInt32LE(36);
  if (size !== frame.length - TRANSFORM_SIZE) throw new IoError('malformed encrypted SMB message: size mismatch');
  if (frame.readBigUInt64LE(44) !== sessionId) throw new IoError('encrypted SMB message for another session');
  const d = decryptor(cipher, key, frame.subarray(20, 36));
  d.setAuthTag(frame.subarray(4, 20));
  d.setAAD(frame.subarray(20, TRANSFORM_SIZE), { plaintextLength: size });
  try {
    const out = d.update(frame.subarray(TRANSFORM_SIZE));
    d.final(); // AEAD modes emit nothing here; it checks the tag
    return out;
  } catch {
    throw new IoError('encrypted SMB message failed its integrity check');
  }
}
