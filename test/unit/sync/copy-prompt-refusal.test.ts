/**
 * copy takes the diff's lock beside the images' opens; a stale-looking lock there (another host's, its renewal long
 * past) is watched for its whole lease (120 s) before it is taken over. A refusal that needs only the images (a
 * missing or raw target, a missing source) must not wait for that watch, nor for a pending merge cleanup's wait for
 * the same kind of lock, and must leave the locks as it found them.
 */
import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { localStore } from '../../../src/io/local.js';
import type { Location } from '../../../src/io/location.js';
import { copyToDiff } from '../../../src/sync/copy.js';
import { mergeStateLocationFor, readMergeState, writeMergeState, type MergeState } from '../../../src/sync/merge-state.js';
import { makeTempDir } from '../../helpers/tmp.js';

const tmp = makeTempDir('vhdsync-copy-refusal-');
afterAll(() => tmp.cleanup());
const at = (name: string): Location => ({ store: localStore, path: path.join(tmp.dir, name) });

/** A lock another host's run left behind: its lease (the real 120 s) lapsed an hour ago by its own clock. */
const staleLock = () => JSON.stringify({ pid: 1, host: 'crashed-host', op: 'copy', since: 'then', token: 'feedfacefeedface', generation: 7, renewed: new Date(Date.now() - 3_600_000).toISOString(), leaseMs: 120_000 });

it('a missing or raw target is refused within seconds although the diff lock would be watched for 120 s', async () => {
  writeFileSync(at('src.raw').path, randomBytes(1 << 20));
  writeFileSync(at('target.raw').path, randomBytes(1 << 20));
  const lock = staleLock();
  const locks = ['target_diff.raw.vhdsync-lock', 'missing_diff.vhdx.vhdsync-lock'];
  for (const l of locks) writeFileSync(at(l).path, lock);
  const said = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    for (const [target, why] of [
      ['target.raw', /not a VHD or VHDX image/],
      ['missing.vhdx', /no such file/],
    ] as const) {
      const t0 = Date.now();
      await expect(copyToDiff(at('src.raw'), at(target))).rejects.toThrow(why);
      expect(Date.now() - t0).toBeLessThan(10_000);
    }
  } finally {
    said.mockRestore();
  }
  // The watch was given up, not finished: both stale locks are as they were, nothing else was left.
  for (const l of locks) expect(readFileSync(at(l).path, 'utf8')).toBe(lock);
  expect(readdirSync(tmp.dir).sort()).toEqual(['missing_diff.vhdx.vhdsync-lock', 'src.raw', 'target.raw', 'target_diff.raw.vhdsync-lock']);
}, 60_000);

it("a missing source is refused within seconds although a pending merge's cleanup would watch its diff's lock for 120 s", async () => {
  writeFileSync(at('t2.raw').path, randomBytes(1 << 20));
  // A merge into t2.raw that only lacks its cleanup (its diff gone): copy finishes it under the diff name's lock,
  // which a crashed host left behind.
  const state: MergeState = {
    version: 1,
    diff: at('t2_diff.vhdx').path,
    diffId: '{abc}',
    parent: at('t2.raw').path,
    parentBefore: { contentId: '{def}', fileSize: 1 << 20, mtimeMs: 1.5 },
    step: 'cleanup',
    doneOffset: 1 << 20,
    bytesMerged: 5,
    extentsMerged: 1,
    virtualSize: 1 << 20,
    keepDiff: false,
    startedAt: '2026-01-01T00:00:00.000Z',
  };
  await writeMergeState(mergeStateLocationFor(at('t2.raw')), state);
  const lock = staleLock();
  writeFileSync(at('t2_diff.vhdx.vhdsync-lock').path, lock);
  const t0 = Date.now();
  await expect(copyToDiff(at('gone.raw'), at('t2.raw'))).rejects.toMatchObject({ message: 'no such file or directory', subject: expect.stringContaining('gone.raw') });
  expect(Date.now() - t0).toBeLessThan(10_000);
  // The cleanup's wait for the lock was given up: the stale lock and the pending state are as they were.
  expect(readFileSync(at('t2_diff.vhdx.vhdsync-lock').path, 'utf8')).toBe(lock);
  expect(await readMergeState(mergeStateLocationFor(at('t2.raw')))).toEqual(state);
  expect(readdirSync(tmp.dir).filter((n) => n.startsWith('t2')).sort()).toEqual(['t2.raw', 't2.raw.merge-state.json', 't2_diff.vhdx.vhdsync-lock']);
}, 60_000);
