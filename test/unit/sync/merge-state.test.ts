import { parse, serialize, readMergeState, writeMergeState, removeMergeState, mergeStateLocationFor, type MergeState } from '../../../src/sync/merge-state.js';
import { localStore } from '../../../src/io/local.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { MetafileError } from '../../../src/util/errors.js';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';

const sample: MergeState = {
  version: 1,
  diff: '/x/t_diff.vhdx',
  diffId: '{abc}',
  parent: '/x/t.vhdx',
  parentBefore: { contentId: '{def}', fileSize: 4096, mtimeMs: 1.5 },
  step: 'merging',
  doneOffset: 1 << 20,
  bytesMerged: 5,
  extentsMerged: 1,
  virtualSize: 1 << 30,
  keepDiff: false,
  startedAt: '2026-01-01T00:00:00.000Z',
};

describe('merge state file', () => {
  it('round-trips', () => {
    expect(parse(serialize(sample))).toEqual(sample);
    expect(parse(serialize({ ...sample, step: 'cleanup', metafile: '/x/t.vhdx.blocklist.bin' })).metafile).toBe('/x/t.vhdx.blocklist.bin');
    const v2: MergeState = { ...sample, version: 2, parentId: '{g}', step: 'rotating', parentFinal: { contentId: '{g}', fileSize: 8192, mtimeMs: 2.25 } };
    expect(parse(serialize(v2))).toEqual(v2);
  });

  it.each([
    ['not JSON', Buffer.from('{')],
    ['wrong version', serialize({ ...sample, version: 3 as 1 })],
    ['version 2 without the id the merge gives the parent', serialize({ ...sample, version: 2 })],
    ['version 2 past the data step without the final identity', serialize({ ...sample, version: 2, parentId: 'g', step: 'rotating' })],
    ['unknown step', serialize({ ...sample, step: 'exploding' as 'merging' })],
    ['negative offset', serialize({ ...sample, doneOffset: -1 })],
    ['offset past the end', serialize({ ...sample, doneOffset: sample.virtualSize + 1 })],
    ['missing field', Buffer.from(JSON.stringify({ ...sample, diff: undefined }))],
    ['too large', Buffer.alloc(100 << 10, 0x20)],
  ])('refuses %s with a one-line MetafileError', (_why, bytes) => {
    expect(() => parse(bytes, 'f')).toThrow(MetafileError);
  });

  it('is written atomically next to the parent and removed', async () => {
    const { dir, cleanup } = makeTempDir();
    try {
      const loc = mergeStateLocationFor({ store: localStore, path: path.join(dir, 't.vhdx') });
      expect(loc.path).toBe(path.join(dir, 't.vhdx.merge-state.json'));
      expect(await readMergeState(loc)).toBeNull();
      await writeMergeState(loc, sample);
      await writeMergeState(loc, { ...sample, step: 'rotating' });
      expect((await readMergeState(loc))?.step).toBe('rotating');
      expect(readdirSync(dir)).toEqual(['t.vhdx.merge-state.json']);
      await removeMergeState(loc);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      cleanup();
    }
  });
});
