/**
 * Consecutive blocks hashed together: their states, digests and sub-digests back to back, the unit the direct path
 * hands to a metafile writer. A 4 GiB image is 256 groups instead of 2048 blocks, and a 2 TiB empty one a few
 * hundred instead of a million: the per-block JavaScript the CLI used to run (and V8 compiled on a core the hashing
 * threads wanted) is a copy of a few buffers per group.
 */
import { stateCode, stateName, type BlockState } from './entries.js';
import type { HashedBlock } from './hash-disk.js';
import { DIGEST_LENGTH, SUB_DIGEST_LENGTH, zeroDigest, zeroSubDigests, type HashAlgorithm, type SubAlgorithm } from './hashers.js';
import type { Digests, GroupDigests } from './hash-sync.js';
import type { RecordGroup } from './metafile.js';

/** Blocks of a group known without reading (unallocated or zero) at most. */
export const KNOWN_GROUP = 4096;
/** Bytes of digests and sub-digest slots a group holds at most: large blocks (256 MiB, 4 KiB slots) get fewer per group. */
export const GROUP_BYTES_CAP = 4 << 20;

/** One hashed group. */
export interface HashedGroup extends RecordGroup {
  digests: Buffer;
  subDigests: Buffer | null;
  /** Whether the blocks were read (false when the allocation tables said unallocated or zero). */
  read: boolean;
  /** Virtual bytes the group covers. */
  bytes: number;
}

/** What every group of one image shares: digest and slot sizes, the zero patterns, the last block's length. */
export class GroupShape {
  readonly digestLength: number;
  /** Bytes per block of sub-digests (a full block's), 0 without a second level. */
  readonly slot: number;
  /** Blocks per group of known blocks: KNOWN_GROUP, fewer when their digests and slots would pass GROUP_BYTES_CAP. */
  readonly knownGroup: number;
  private readonly blockCount: number;
  private readonly known = new Map<string, HashedGroup>();

  constructor(
    readonly algorithm: HashAlgorithm,
    readonly blockSize: number,
    readonly virtualSize: number,
    readonly sub: { algorithm: SubAlgorithm; size: number } | null,
  ) {
    this.digestLength = DIGEST_LENGTH[algorithm];
    this.slot = sub ? (blockSize / sub.size) * SUB_DIGEST_LENGTH[sub.algorithm] : 0;
    this.blockCount = Math.ceil(virtualSize / blockSize);
    this.knownGroup = Math.max(1, Math.min(KNOWN_GROUP, Math.floor(GROUP_BYTES_CAP / (this.slot + this.digestLength))));
  }

  /** Virtual bytes of block `index` (the last one may be short). */
  blockLength(index: number): number {
    return Math.min(this.blockSize, this.virtualSize - index * this.blockSize);
  }

  /** Virtual bytes of blocks first..first+count. */
  private bytesOf(first: number, count: number): number {
    return Math.min(count * this.blockSize, this.virtualSize - first * this.blockSize);
  }

  /**
   * Groups of blocks the tables say need no read, at most `knownGroup` blocks each. Full groups of one kind are built
   * once and handed out again: nothing downstream writes into a group.
   */
  *knownGroups(first: number, count: number, kind: 'unallocated' | 'zero'): Generator<HashedGroup> {
    for (let at = first; at < first + count; at += this.knownGroup) {
      const n = Math.min(this.knownGroup, first + count - at);
      const key = `${kind}:${n}`;
      const shared = at + n < this.blockCount ? this.known.get(key) : undefined;
      const g = shared ? { ...shared, first: at } : this.allZero(at, n, kind, false);
      if (!shared && at + n < this.blockCount && n === this.knownGroup) this.known.set(key, g);
      yield g;
    }
  }

  /** A group every block of which reads as zeros: `kind` for each, digests and sub-digests of zeros. */
  allZero(first: number, count: number, kind: BlockState, read: boolean): HashedGroup {
    const g = this.empty(first, count, read);
    g.states.fill(stateCode(kind));
    g.digests.fill(zeroDigest(this.algorithm, this.blockSize));
    if (this.sub) g.subDigests!.fill(zeroSubDigests(this.sub.algorithm, this.sub.size, this.blockSize));
    const lastIndex = first + count - 1;
    const last = this.blockLength(lastIndex);
    if (last !== this.blockSize) this.setZero(g, count - 1, last);
    return g;
  }

  /**
   * A group of blocks that were read, from a hashing thread's per-block digests (null for an all-zero block). Each
   * block's digests are checked for their length: a hasher's mistake must fail the list, not shift its entries.
   */
  fromDigests(first: number, digests: Digests): HashedGroup {
    const count = digests.length;
    const g = this.empty(first, count, true);
    const d = this.digestLength;
    const data = stateCode('data');
    for (let k = 0; k < count; k++) {
      const got = digests[k];
      const length = this.blockLength(first + k);
      if (!got) {
        g.states[k] = stateCode('zero');
        this.setZero(g, k, length);
        continue;
      }
      const subs = this.subBytes(length);
      if (got[0].length !== d || (got[1]?.length ?? 0) !== subs) {
        throw new Error(`block ${first + k}: ${got[0].length} bytes of digest and ${got[1]?.length ?? 0} of sub-digests, expected ${d} and ${subs}`);
      }
      g.states[k] = data;
      g.digests.set(got[0], k * d);
      if (got[1]) g.subDigests!.set(got[1], k * this.slot);
    }
    return g;
  }

  /**
   * A group of blocks that were read, from a hashing thread's three buffers (hash-sync.ts GroupDigests), which the
   * group takes over: all-zero blocks get the digests of zeros here. Every length and state is checked.
   */
  fromPacked(first: number, got: GroupDigests): HashedGroup {
    const count = got.states.length;
    if (count < 1 || got.digests.length !== count * this.digestLength || (got.subs?.length ?? 0) !== count * this.slot || (got.subs === null) !== (this.sub === null)) {
      throw new Error(`a hashed group of ${count} blocks came with ${got.digests.length} bytes of digests and ${got.subs?.length ?? 0} of sub-digests`);
    }
    const g: HashedGroup = {
      first,
      count,
      states: got.states,
      digests: view(got.digests, 0, got.digests.length),
      subDigests: got.subs ? view(got.subs, 0, got.subs.length) : null,
      read: true,
      bytes: this.bytesOf(first, count),
    };
    for (let k = 0; k < count; k++) {
      if (g.states[k] === ZERO) this.setZero(g, k, this.blockLength(first + k));
      else if (g.states[k] !== DATA) throw new Error(`a hashed group gave block ${first + k} state ${g.states[k]}`);
    }
    return g;
  }

  /** Sets block k of `g` from a block hashed one at a time. */
  setBlock(g: HashedGroup, k: number, b: HashedBlock): void {
    g.states[k] = stateCode(b.state);
    g.digests.set(b.digest, k * this.digestLength);
    if (this.sub) this.setSubs(g, k, b.subDigests!);
  }

  /** The blocks of a group one by one, for callers that take blocks (views into the group's buffers). */
  *blocksOf(g: HashedGroup): Generator<HashedBlock> {
    const d = this.digestLength;
    for (let k = 0; k < g.count; k++) {
      const index = g.first + k;
      const length = this.blockLength(index);
      const block: HashedBlock = {
        index,
        offset: index * this.blockSize,
        length,
        state: stateName(g.states[k]),
        read: g.read,
        digest: view(g.digests, k * d, d),
      };
      if (this.sub) block.subDigests = view(g.subDigests!, k * this.slot, this.subBytes(length));
      yield block;
    }
  }

  private empty(first: number, count: number, read: boolean): HashedGroup {
    return {
      first,
      count,
      states: new Uint8Array(count),
      digests: Buffer.allocUnsafe(count * this.digestLength),
      // Zero-filled: a short last block's spare slots stay 0, as the list's table wants them.
      subDigests: this.sub ? Buffer.alloc(count * this.slot) : null,
      read,
      bytes: this.bytesOf(first, count),
    };
  }

  /** Sets block k of `g` to the digests of `length` zero bytes. */
  private setZero(g: HashedGroup, k: number, length: number): void {
    g.digests.set(zeroDigest(this.algorithm, length), k * this.digestLength);
    if (this.sub) this.setSubs(g, k, zeroSubDigests(this.sub.algorithm, this.sub.size, length));
  }

  /** Puts a block's sub-digests in its slot, the slot's rest 0. */
  private setSubs(g: HashedGroup, k: number, subs: Uint8Array): void {
    const slot = g.subDigests!.subarray(k * this.slot, (k + 1) * this.slot);
    slot.fill(0);
    slot.set(subs);
  }

  /** Bytes of sub-digests a block of `length` bytes has. */
  private subBytes(length: number): number {
    return this.sub ? Math.ceil(length / this.sub.size) * SUB_DIGEST_LENGTH[this.sub.algorithm] : 0;
  }
}

const ZERO = stateCode('zero');
const DATA = stateCode('data');

function view(b: Uint8Array, at: number, length: number): Buffer {
  return Buffer.from(b.buffer, b.byteOffset + at, length);
}
