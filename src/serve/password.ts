/**
 * Password hashes of `serve --credentials`: scrypt (node:crypto) with a random salt, in a self-describing text
 * `$scrypt$ln=15,r=8,p=1$<salt base64>$<key base64>`, so the parameters can be raised later without breaking
 * old lines. The password itself is never stored, logged or compared directly.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { UsageError } from '../util/errors.js';

/** Cost of new hashes: 2^15 iterations (about 32 MiB and a few tens of milliseconds). */
const LOG_N = 15;
const KEY_BYTES = 32;
/** Hashes with parameters beyond these are refused, so a credentials file cannot make the server exhaust memory. */
const MAX_LOG_N = 20;
const MAX_R = 32;
const MAX_P = 16;

/** Parsed hash text. */
export interface PasswordHash {
  logN: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function scrypt(password: string, salt: Buffer, h: Omit<PasswordHash, 'salt' | 'key'>, keyLength: number): Promise<Buffer> {
  const opts: ScryptOptions = { N: 2 ** h.logN, r: h.r, p: h.p, maxmem: 256 * 2 ** h.logN * h.r + (1 << 20) };
  return new Promise((resolve, reject) => scryptCb(password, salt, keyLength, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

/** A new hash of `password`, as `--hash-password` prints it. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const h = { logN: LOG_N, r: 8, p: 1 };
  const key = await scrypt(password, salt, h, KEY_BYTES);
  return `$scrypt$ln=${h.logN},r=${h.r},p=${h.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Parses hash text; throws UsageError (without echoing the text) when it is not one. */
export function parseHash(text: string, where: string): PasswordHash {
  const m = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/.exec(text);
  if (!m) throw new UsageError('not a password hash made by vhdsync serve --hash-password', where);
  const h = { logN: Number(m[1]), r: Number(m[2]), p: Number(m[3]), salt: Buffer.from(m[4], 'base64'), key: Buffer.from(m[5], 'base64') };
  if (h.logN < 10 || h.logN > MAX_LOG_N || h.r < 1 || h.r > MAX_R || h.p < 1 || h.p > MAX_P || h.salt.length < 8 || h.key.length < 16 || h.key.length > 64) {
    throw new UsageError('password hash parameters out of range', where);
  }
  return h;
}

/** True when `password` matches; the comparison of the derived keys takes the same time wherever they differ. */
export async function verifyPassword(password: string, hash: PasswordHash): Promise<boolean> {
  const key = await scrypt(password, hash.salt, hash, hash.key.length);
  return timingSafeEqual(key, hash.key);
}

/** A hash no password matches, checked for unknown users so they take as long as known ones. */
export const DECOY: PasswordHash = { logN: LOG_N, r: 8, p: 1, salt: randomBytes(16), key: randomBytes(KEY_BYTES) };
