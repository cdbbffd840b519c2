#!/usr/bin/env node
// The hashing cost of a metafile's second level (decision 0018), in-process over 1 GiB held in memory:
// block digests alone, block digests plus sub-block digests from the same 1 MiB pieces, and the tree variant
// (block digest = digest of the sub-digests). Prints CPU seconds per GiB, median of N runs.
// Run: node bench/hash-levels.js [--runs N]
import { createHash, randomBytes } from 'node:crypto';
import xxhash from 'xxhash-addon';
import { header, opt } from './lib.js';

const RUNS = Number(opt('--runs', 5));
const { XXHash128, XXHash3 } = xxhash;
const BUF = randomBytes(256 << 20);
const BLOCK = 2 << 20;
const PIECE = 1 << 20;
const GiB = 1 << 30;
const h128 = new XXHash128(Buffer.alloc(8));

/** Runs `fn` over `total` bytes (BUF repeatedly), N times; CPU seconds per GiB, median and min. */
function measure(name, fn, total) {
  const cpu = [];
  for (let r = 0; r < RUNS; r++) {
    const t = process.cpuUsage();
    for (let pass = 0; pass < total / BUF.length; pass++) fn();
    const c = process.cpuUsage(t);
    cpu.push(((c.user + c.system) / 1e6) * (GiB / total));
  }
  cpu.sort((a, b) => a - b);
  console.log(`| ${name} | ${cpu[Math.floor(RUNS / 2)].toFixed(3)} | ${cpu[0].toFixed(3)} |`);
}

const xxhBlocks = () => {
  for (let o = 0; o < BUF.length; o += BLOCK) {
    h128.reset();
    for (let p = o; p < o + BLOCK; p += PIECE) h128.update(BUF.subarray(p, p + PIECE));
    h128.digest();
  }
};
const xxhBoth = (S) => () => {
  for (let o = 0; o < BUF.length; o += BLOCK) {
    h128.reset();
    for (let p = o; p < o + BLOCK; p += PIECE) {
      const piece = BUF.subarray(p, p + PIECE);
      h128.update(piece);
      for (let s = 0; s < PIECE; s += S) XXHash3.hash(piece.subarray(s, s + S));
    }
    h128.digest();
  }
};
const xxhTree = (S) => () => {
  for (let o = 0; o < BUF.length; o += BLOCK) {
    const subs = Buffer.allocUnsafe((BLOCK / S) * 8);
    for (let s = 0, k = 0; s < BLOCK; s += S, k++) XXHash3.hash(BUF.subarray(o + s, o + s + S)).copy(subs, k * 8);
    XXHash128.hash(subs);
  }
};
const shaBlocks = () => {
  for (let o = 0; o < BUF.length; o += BLOCK) createHash('sha256').update(BUF.subarray(o, o + BLOCK)).digest();
};
const shaBoth = (S) => () => {
  for (let o = 0; o < BUF.length; o += BLOCK) {
    const h = createHash('sha256');
    for (let s = 0; s < BLOCK; s += S) {
      const piece = BUF.subarray(o + s, o + s + S);
      h.update(piece);
      createHash('sha256').update(piece).digest();
    }
    h.digest();
  }
};
const shaTree = (S) => () => {
  for (let o = 0; o < BUF.length; o += BLOCK) {
    const subs = [];
    for (let s = 0; s < BLOCK; s += S) subs.push(createHash('sha256').update(BUF.subarray(o + s, o + s + S)).digest());
    createHash('sha256').update(Buffer.concat(subs)).digest();
  }
};

header('second-level hashing cost (decision 0018)', RUNS);
console.log('| digests per 2 MiB block | CPU s/GiB, median | min |');
console.log('|---|---|---|');
measure('XXH128 of the block (version 2)', xxhBlocks, GiB);
measure('XXH128 of the block + XXH3-64 per 32 KiB', xxhBoth(32 << 10), GiB);
measure('XXH128 of the block + XXH3-64 per 64 KiB', xxhBoth(64 << 10), GiB);
measure('XXH3-64 per 32 KiB, block = XXH128 of the sub-digests', xxhTree(32 << 10), GiB);
measure('SHA-256 of the block (version 2)', shaBlocks, GiB / 4);
measure('SHA-256 of the block + SHA-256 per 64 KiB', shaBoth(64 << 10), GiB / 4);
measure('SHA-256 per 64 KiB, block = SHA-256 of the sub-digests', shaTree(64 << 10), GiB / 4);
