#!/usr/bin/env node
// Restore from an object repository: are block GETs really parallel, and what does that buy (docs/performance.md,
// "Repositories on object storage"). Run after `npm run build`:  node bench/s3-restore.js [--size GiB] [--runs N]
// Starts a private radosgw (scripts/ceph/rgw-up.sh, memstore) on loopback, backs up a random disk of --size, then per
// run, in the same process and the same run:
//  1. `restorePoint` (the code `vhdsync restore` runs) to a raw file, with the store's GETs counted as they start and
//     end: the most in flight at once, and the mean over the restore's wall time (sum of GET durations / wall);
//  2. the SDK peer: GetObject of the same block objects, one at a time and 8 at a time, bodies read and dropped.
// The SDK's notice that its 2027 releases need Node 22 (src/io/s3/s3-store.ts silences it the same way).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const { CreateBucketCommand, GetObjectCommand, S3Client } = await import('@aws-sdk/client-s3');
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { BIN, GiB, MiB, benchDir, header, median, opt, load, randomFile, run, sh, startRadosgw } from './lib.js';
import '../dist/formats/index.js';
import { parseLocation } from '../dist/io/location.js';
import { openRepository, restorePoint } from '../dist/repo/index.js';

const RUNS = Number(opt('--runs', 3));
const SIZE = Math.round(Number(opt('--size', 0.5)) * GiB);
const DIR = benchDir('vhdsync-bench-s3-restore');
const rgwDir = path.join(DIR, 'rgw');
const src = path.join(DIR, 'disk.raw');
const out = path.join(DIR, 'restored.raw');

const { env, sdk, stop: stopRadosgw } = startRadosgw(rgwDir, 4 * GiB, S3Client);
const seconds = (t) => Number(process.hrtime.bigint() - t) / 1e9;

/** GetObject of every key, `inFlight` at once; returns the wall seconds. */
async function sdkGets(bucket, keys, inFlight) {
  const t = process.hrtime.bigint();
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const r = await sdk.send(new GetObjectCommand({ Bucket: bucket, Key: keys[next++] }));
      await r.Body.transformToByteArray();
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return seconds(t);
}

const repoUrl = 's3://bench/r';
try {
  header('s3-restore', RUNS);
  randomFile(src, SIZE);
  await sdk.send(new CreateBucketCommand({ Bucket: 'bench' }));
  run(process.execPath, [BIN, 'backup', src, '--repo', repoUrl, '--name', 'disk', '-q'], { env });
  const repo = await openRepository(repoUrl, true, { env });
  const point = (await repo.readManifest('disk')).points[0];
  const keys = [...(await repo.readMap('disk', point)).hashes()].map((h) => `r/disks/disk/blocks/${h}`);
  // Count the store's GETs: the repository reads every object through this one method.
  const get = repo.store.get.bind(repo.store);
  let inFlight = 0;
  let most = 0;
  let busy = 0n;
  repo.store.get = async (key, range) => {
    const t = process.hrtime.bigint();
    most = Math.max(most, ++inFlight);
    try {
      return await get(key, range);
    } finally {
      inFlight--;
      busy += process.hrtime.bigint() - t;
    }
  };
  console.log(`| run | restore of ${SIZE / MiB} MiB (${keys.length} block objects) | GETs in flight: most, mean | SDK GetObject 1 at a time | SDK 8 at a time | restore / SDK x8 |`);
  console.log('|---|---|---|---|---|---|');
  const ratios = [];
  for (let r = 1; r <= RUNS; r++) {
    most = 0;
    busy = 0n;
    rmSync(out, { force: true });
    const t = process.hrtime.bigint();
    await restorePoint(repo, 'disk', await parseLocation(out), { format: 'raw' });
    const s = seconds(t);
    const mean = Number(busy) / 1e9 / s;
    const one = await sdkGets('bench', keys, 1);
    const eight = await sdkGets('bench', keys, 8);
    ratios.push(s / eight);
    console.log(`| ${r} | ${s.toFixed(2)} s (${(SIZE / MiB / s).toFixed(0)} MiB/s) | ${most}, ${mean.toFixed(1)} | ${one.toFixed(2)} s | ${eight.toFixed(2)} s | ${(s / eight).toFixed(2)}x |`);
  }
  console.log(`\nmedian restore / SDK x8: ${median(ratios).toFixed(2)}x; load average now ${load()}\n`);
  await repo.close();
} finally {
  sdk.destroy();
  rmSync(out, { force: true });
  stopRadosgw();
}
