import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type Xxhash from 'xxhash-addon';
import { UsageError } from '../util/errors.js';

// xxhash-addon is CommonJS, loaded with require: an ESM import would first run Node's export lexer over it, about
// 160 M instructions for the first such import in a process (util/crc32c.ts says the same of @node-rs/crc32).
// Loaded at the first digest, not with this module: commands that only read and write metafiles (merge's rotation)
// import the digest lengths from here, and finding and loading the addon took 25-130 ms of their start-up.
let addon: typeof Xxhash | null = null;
const xxhash = (): typeof Xxhash => (addon ??= createRequire(import.meta.url)('xxhash-addon') as typeof Xxhash);

/** Digest algorithms of metafiles; `sha1-16` is VhdBlockBackup's (first 16 bytes of SHA-1). */
export type HashAlgorithm = 'xxh128' | 'sha256' | 'sha1-16';

/** Algorithms a user may choose for native metafiles. */
export const NATIVE_ALGORITHMS = ['xxh128', 'sha256'] as const;

/** Digest length in bytes of each algorithm. */
export const DIGEST_LENGTH: Record<HashAlgorithm, number> = { xxh128: 16, sha256: 32, 'sha1-16': 16 };

/** Digest of one block: XXH128 in canonical byte order (as `xxhsum -H2` prints), SHA-256, or SHA-1 cut to 16 bytes. */
export function digestBlock(algorithm: HashAlgorithm, data: Uint8Array): Buffer {
  switch (algorithm) {
    case 'xxh128':
      return xxhash().XXHash128.hash(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    case 'sha256':
      return createHash('sha256').update(data).digest();
    case 'sha1-16':
      return createHash('sha1').update(data).digest().subarray(0, 16);
    default:
      throw new UsageError(`unknown hash algorithm '${algorithm as string}'`);
  }
}

/** Zero runs are hashed in pieces of this size so a 256 MiB zero block needs no 256 MiB buffer. */
const ZERO_PIECE = Buffer.alloc(1 << 20);
const zeroCache = new Map<string, Buffer>();

/** Digest of `length` zero bytes, computed once per (algorithm, length): what zero and unallocated blocks record. */
export function zeroDigest(algorithm: HashAlgorithm, length: number): Buffer {
  const key = `${algorithm}:${length}`;
  let d = zeroCache.get(key);
  if (!d) {
    d = length <= ZERO_PIECE.length ? digestBlock(algorithm, ZERO_PIECE.subarray(0, length)) : streamZeros(algorithm, length);
    zeroCache.set(key, d);
  }
  return d;
}

function streamZeros(algorithm: HashAlgorithm, length: number): Buffer {
  const h =
    algorithm === 'xxh128' ? new (xxhash().XXHash128)(Buffer.alloc(8)) : createHash(algorithm === 'sha256' ? 'sha256' : 'sha1');
  for (let done = 0; done < length; done += ZERO_PIECE.length) {
    h.update(ZERO_PIECE.subarray(0, Math.min(ZERO_PIECE.length, length - done)));
  }
  const d = h.digest();
  return algorithm === 'sha1-16' ? d.subarray(0, 16) : d;
}

/**
 * Digests of the second level (sub-blocks inside each block; docs/metafile.md, version 3): XXH3-64 in canonical
 * byte order (what `xxhsum -H3` prints) beside XXH128 block digests, SHA-256 beside SHA-256 ones.
 */
export type SubAlgorithm = 'xxh3-64' | 'sha256';

/** Digest length in bytes of each sub-block algorithm. */
export const SUB_DIGEST_LENGTH: Record<SubAlgorithm, number> = { 'xxh3-64': 8, sha256: 32 };

/**
 * The second level a native list of `algorithm` gets by default: 32 KiB sub-blocks with 8-byte XXH3-64 for XXH128
 * lists (529 bytes per 2 MiB block: 0.025% of the disk), 64 KiB with full SHA-256 for SHA-256 lists, whose
 * comparisons must stay collision resistant (decision 0019). Null for algorithms without one (VhdBlockBackup's).
 */
export function defaultSubLevel(algorithm: HashAlgorithm): { algorithm: SubAlgorithm; size: number } | null {
  if (algorithm === 'xxh128') return { algorithm: 'xxh3-64', size: 32 << 10 };
  if (algorithm === 'sha256') return { algorithm: 'sha256', size: 64 << 10 };
  return null;
}

/** Digest of one sub-block. */
export function digestSub(algorithm: SubAlgorithm, data: Uint8Array): Buffer {
  if (algorithm === 'xxh3-64') return xxhash().XXHash3.hash(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return createHash('sha256').update(data).digest();
}

/** Sub-digests of `data` (one block's bytes), back to back: ceil(length / size) digests, the last over its shorter piece. */
export function digestSubs(algorithm: SubAlgorithm, size: number, data: Uint8Array): Buffer {
  const len = SUB_DIGEST_LENGTH[algorithm];
  const out = Buffer.allocUnsafe(Math.ceil(data.length / size) * len);
  for (let at = 0, k = 0; at < data.length; at += size, k++) digestSub(algorithm, data.subarray(at, Math.min(at + size, data.length))).copy(out, k * len);
  return out;
}

const zeroSubsCache = new Map<string, Buffer>();

/** The sub-digests of `length` zero bytes (a zero or unallocated block), computed once per shape. */
export function zeroSubDigests(algorithm: SubAlgorithm, size: number, length: number): Buffer {
  const key = `${algorithm}:${size}:${length}`;
  let d = zeroSubsCache.get(key);
  if (!d) {
    // A sub-block is at most 1 MiB (header.ts MAX_SUB_BLOCK_SIZE), the zero piece's size: never a silent shorter slice.
    if (size > ZERO_PIECE.length) throw new Error(`internal error: sub-block of ${size} bytes is larger than the zero piece`);
    const full = digestSub(algorithm, ZERO_PIECE.subarray(0, size));
    const len = SUB_DIGEST_LENGTH[algorithm];
    d = Buffer.allocUnsafe(Math.ceil(length / size) * len);
    for (let at = 0, k = 0; at < length; at += size, k++) {
      const n = Math.min(size, length - at);
      (n === size ? full : digestSub(algorithm, ZERO_PIECE.subarray(0, n))).copy(d, k * len);
    }
    zeroSubsCache.set(key, d);
  }
  return d;
}
