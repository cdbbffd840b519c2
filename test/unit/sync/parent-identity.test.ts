import { parentChange, resumeProblem } from '../../../src/sync/parent-identity.js';
import type { DiskIdentity } from '../../../src/formats/disk.js';

const vhd: DiskIdentity = { format: 'vhd', contentId: 'aaaa', timestamp: 5, fileSize: 4096, mtimeMs: 1000.5 };

describe('parentChange (merge, before the first write)', () => {
  it('compares the recorded identity by the staleness rule: VHD id, size and mtime; VHDX its id only', () => {
    const record = { parentIdentity: vhd, writtenMs: 0 };
    expect(parentChange(record, vhd)).toBeNull();
    expect(parentChange(record, { ...vhd, mtimeMs: 1000.75 })).toMatch(/^it was modified at .*, after copy checked it at /);
    expect(parentChange(record, { ...vhd, fileSize: 8192 })).toMatch(/^its file size changed \(4096 -> 8192 bytes\)/);
    expect(parentChange(record, { ...vhd, contentId: 'bbbb' })).toMatch(/^its UniqueId changed/);
    const vhdx = { ...vhd, format: 'vhdx' as const };
    expect(parentChange({ parentIdentity: vhdx, writtenMs: 0 }, { ...vhdx, mtimeMs: 9e12, fileSize: 1 })).toBeNull();
  });

  it('without a record: a VHD or raw parent newer than the diff is changed; a VHDX is left to parent_linkage', () => {
    expect(parentChange({ parentIdentity: null, writtenMs: 1000.5 }, vhd)).toBeNull();
    expect(parentChange({ parentIdentity: null, writtenMs: 1000 }, vhd)).toMatch(/after the diff was written/);
    expect(parentChange({ parentIdentity: null, writtenMs: 0 }, { ...vhd, format: 'raw', contentId: '' })).toMatch(/modified/);
    expect(parentChange({ parentIdentity: null, writtenMs: 0 }, { ...vhd, format: 'vhdx' })).toBeNull();
  });
});

describe('resumeProblem (merge, on resume)', () => {
  const before = { contentId: 'aaaa', fileSize: 4096, mtimeMs: 1000.5 };
  it('while merging: the id the merge gave, or the parent exactly as before; anything else is refused', () => {
    const st = { step: 'merging' as const, parentBefore: before, parentId: 'gggg' };
    expect(resumeProblem(st, { ...vhd, contentId: 'gggg', fileSize: 1 << 20, mtimeMs: 2000 })).toBeNull();
    expect(resumeProblem(st, vhd)).toBeNull();
    expect(resumeProblem(st, { ...vhd, mtimeMs: 1001 })).toBe('its id is aaaa, the merge gave it gggg');
    expect(resumeProblem(st, { ...vhd, contentId: 'hhhh' })).toMatch(/its id is hhhh/);
    // A version 1 state recorded no id: nothing to compare.
    expect(resumeProblem({ step: 'merging', parentBefore: before }, { ...vhd, contentId: 'zz' })).toBeNull();
  });

  it('after the data step: the whole identity recorded then, for every format; cleanup no longer looks', () => {
    const parentFinal = { contentId: 'gggg', fileSize: 8192, mtimeMs: 3000 };
    const st = { step: 'rotating' as const, parentBefore: before, parentId: 'gggg', parentFinal };
    const vhdx: DiskIdentity = { format: 'vhdx', contentId: 'gggg', timestamp: 0, fileSize: 8192, mtimeMs: 3000 };
    expect(resumeProblem(st, vhdx)).toBeNull();
    expect(resumeProblem(st, { ...vhdx, mtimeMs: 3001 })).toMatch(/^it was modified at .*, after the merge ended at /);
    expect(resumeProblem({ ...st, step: 'cleanup' }, { ...vhdx, mtimeMs: 3001 })).toBeNull();
  });
});
