import { createHash } from 'node:crypto';
import xxhash from 'xxhash-addon';
import { UsageError } from '../util/errors.js';

// xxhash-addon is CommonJS: Node's ESM loader cannot see its named exports.
const { XXHash128 } = xxhash;

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
      return XXHash128.hash(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
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
    algorithm === 'xxh128' ? new XXHash128(Buffer.alloc(8)) : createHash(algorithm === 'sha256' ? 'sha256' : 'sha1');
  for (let done = 0; done < length; done += ZERO_PIECE.length) {
    h.update(ZERO_PIECE.subarray(0, Math.min(ZERO_PIECE.length, length - done)));
  }
  const d = h.digest();
  return algorithm === 'sha1-16' ? d.subarray(0, 16) : d;
}
