#!/usr/bin/env node
// Object repository benchmarks (results: docs/performance.md, "Repositories on object storage").
// Run after `npm run build`:  node bench/s3.js [--dir DIR] [--size GiB] [--runs N] [--rss-sizes 0.25,1]
// Starts a private radosgw (scripts/ceph/rgw-up.sh, memstore) on loopback, then, in the same run:
//  1. a full `vhdsync backup` of a random disk into s3://BUCKET/r, against a plain SDK upload of the same bytes as
//     objects of the same size (the 2 MiB block) with the same concurrency (8 PutObject in flight);
//  2. incremental backups after rewriting 1% of the disk (64 KiB pieces at random places), against the SDK uploading
//     the same changed 2 MiB blocks the same way;
//  3. the peak RSS (/usr/bin/time %M) of a full backup for each of --rss-sizes (GiB): memory must stay flat.
import { CreateBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { closeSync, openSync, readSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { BIN, GiB, MiB, PIECE, benchDir, distinctRandom, header, median, opt, randomFile, load, rewritePieces, run, sh, startRadosgw } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const SIZE = Math.round(Number(opt('--size', 1)) * GiB);
const RSS_SIZES = String(opt('--rss-sizes', '0.25,1')).split(',').map((s) => Math.round(Number(s) * GiB));
const BLOCK = 2 * MiB;
const IN_FLIGHT = 8;
const DIR = benchDir('vhdsync-bench-s3');
const rgwDir = path.join(DIR, 'rgw');
const src = path.join(DIR, 'disk.raw');

const { env, sdk, stop: stopRadosgw } = startRadosgw(rgwDir, 8 * GiB, S3Client);

const seconds = (t) => Number(process.hrtime.bigint() - t) / 1e9;

/** `vhdsync ARGS` under /usr/bin/time: wall seconds, peak RSS (MiB) and stdout. */
function vhdsync(...argv) {
  const t = process.hrtime.bigint();
  const r = run('/usr/bin/time', ['-f', 'peak-rss-kib %M', process.execPath, BIN, ...argv], { env });
  const rss = Number(/peak-rss-kib (\d+)/.exec(r.stderr)[1]) / 1024;
  return { seconds: seconds(t), rss, out: r.stdout };
}

/** The SDK peer: PutObject of each listed block of `file` (BLOCK bytes at index*BLOCK), IN_FLIGHT at once. */
async function sdkUpload(bucket, prefix, file, blocks) {
  const t = process.hrtime.bigint();
  const fd = openSync(file, 'r');
  let next = 0;
  const worker = async () => {
    while (next < blocks.length) {
      const i = blocks[next++];
      const buf = Buffer.allocUnsafe(BLOCK);
      const n = readSync(fd, buf, 0, BLOCK, i * BLOCK);
      await sdk.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${i}`, Body: buf.subarray(0, n) }));
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  closeSync(fd);
  return seconds(t);
}

/** Deletes every object under `prefix` (the peer's uploads, so the gateway's memory holds one copy at a time). */
async function empty(bucket, prefix) {
  for (;;) {
    const r = await sdk.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
    const keys = (r.Contents ?? []).map((o) => ({ Key: o.Key }));
    if (!keys.length) return;
    await sdk.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
  }
}

let bucketSeq = 0;
async function newBucket() {
  const name = `bench-${process.pid}-${++bucketSeq}`;
  await sdk.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

try {
  header('s3', RUNS);
  const all = Array.from({ length: Math.ceil(SIZE / BLOCK) }, (_, i) => i);
  randomFile(src, SIZE);
  console.log(`| run | full backup, ${SIZE / GiB} GiB | SDK PutObject of the same ${all.length} blocks | ratio | backup peak RSS |`);
  console.log('|---|---|---|---|---|');
  const ratios = [];
  let bucket = '';
  for (let r = 1; r <= RUNS; r++) {
    bucket = await newBucket();
    sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', src]);
    const b = vhdsync('backup', src, '--repo', `s3://${bucket}/r`, '--name', 'disk', '-q');
    const p = await sdkUpload(bucket, 'peer/', src, all);
    await empty(bucket, 'peer/');
    ratios.push(b.seconds / p);
    console.log(`| ${r} | ${b.seconds.toFixed(2)} s | ${p.toFixed(2)} s | ${(b.seconds / p).toFixed(2)}x | ${b.rss.toFixed(0)} MiB |`);
    if (r < RUNS) await empty(bucket, '');
  }
  console.log(`\nmedian ratio ${median(ratios).toFixed(2)}x, load average now ${load()}\n`);

  // Incrementals into the last bucket's repository: 1% of the disk rewritten before each.
  const pieces = Math.round((SIZE * 0.01) / PIECE);
  console.log(`| run | incremental backup (${((pieces * PIECE) / MiB).toFixed(0)} MiB rewritten) | SDK PutObject of the same changed blocks | ratio | blocks sent |`);
  console.log('|---|---|---|---|---|');
  const incRatios = [];
  for (let r = 1; r <= RUNS; r++) {
    const chosen = distinctRandom(SIZE / PIECE, pieces);
    const fd = openSync(src, 'r+');
    rewritePieces(fd, chosen);
    closeSync(fd);
    const changed = [...new Set(chosen.map((i) => Math.floor((i * PIECE) / BLOCK)))];
    sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', src]);
    const b = vhdsync('backup', src, '--repo', `s3://${bucket}/r`, '--name', 'disk', '--json');
    const s = JSON.parse(b.out);
    const p = await sdkUpload(bucket, 'peer/', src, changed);
    await empty(bucket, 'peer/');
    incRatios.push(b.seconds / p);
    console.log(`| ${r} | ${b.seconds.toFixed(2)} s | ${p.toFixed(2)} s | ${(b.seconds / p).toFixed(2)}x | ${changed.length} (${(s.changedBytes / MiB).toFixed(0)} MiB changed) |`);
  }
  console.log(`\nmedian ratio ${median(incRatios).toFixed(2)}x\n`);

  console.log('| disk size | full backup | peak RSS |');
  console.log('|---|---|---|');
  for (const size of RSS_SIZES) {
    const file = path.join(DIR, `rss-${size}.raw`);
    randomFile(file, size);
    const bk = await newBucket();
    const b = vhdsync('backup', file, '--repo', `s3://${bk}/r`, '--name', 'disk', '-q');
    console.log(`| ${(size / GiB).toFixed(2)} GiB | ${b.seconds.toFixed(2)} s | ${b.rss.toFixed(0)} MiB |`);
    await empty(bk, '');
    rmSync(file, { force: true });
  }
} finally {
  sdk.destroy();
  stopRadosgw();
}
