import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { DiskIdentity } from '../../../src/formats/disk.js';
import { openDisk } from '../../../src/formats/index.js';
import { localStore } from '../../../src/io/local.js';
import { identityProblem, checkFresh } from '../../../src/meta/fresh.js';
import { createMetafile } from '../../../src/meta/create.js';
import { readMetafile, metafileLocationFor } from '../../../src/meta/metafile.js';
import { MetafileError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';

const base: DiskIdentity = { format: 'vhdx', contentId: 'b298d413-f67e-412a-9a72-c7c7fc9b6cb5', timestamp: 0, fileSize: 4 << 20, mtimeMs: 1000.5 };

describe('identityProblem (the staleness rule of docs/metafile.md)', () => {
  it('VHDX: only the DataWriteGuid matters', () => {
    expect(identityProblem(base, { ...base, fileSize: 8 << 20, mtimeMs: 2000 })).toBeNull();
    expect(identityProblem(base, { ...base, contentId: 'ff34003b-11ed-4cf8-a166-b2be05e20b80' })).toMatch(/DataWriteGuid changed/);
    // While hashing (strict), any write counts.
    expect(identityProblem(base, { ...base, mtimeMs: 2000 }, true)).toMatch(/modified at/);
  });

  it('VHD: UniqueId, file size and mtime (writers keep UniqueId)', () => {
    const vhd: DiskIdentity = { ...base, format: 'vhd', contentId: 'abc' };
    expect(identityProblem(vhd, { ...vhd })).toBeNull();
    expect(identityProblem(vhd, { ...vhd, contentId: 'abd' })).toMatch(/UniqueId changed/);
    expect(identityProblem(vhd, { ...vhd, fileSize: vhd.fileSize + 512 })).toMatch(/file size changed/);
    expect(identityProblem(vhd, { ...vhd, mtimeMs: 1000.6 })).toMatch(/modified at/);
  });

  it('raw: file size and mtime; a different format is always stale', () => {
    const raw: DiskIdentity = { ...base, format: 'raw', contentId: '' };
    expect(identityProblem(raw, { ...raw })).toBeNull();
    expect(identityProblem(raw, { ...raw, mtimeMs: 999 })).toMatch(/modified/);
    expect(identityProblem(raw, { ...raw, format: 'vhdx' })).toMatch(/made from a raw image/);
  });
});

describe('checkFresh on files', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('accepts a fresh metafile and refuses it once the image is written, naming the fix', async () => {
    const img = path.join(tmp.dir, 'a.raw');
    fs.writeFileSync(img, randomBytes(1 << 20));
    const disk = await openDisk(img);
    await createMetafile(disk, { blockSize: 65536 });
    const meta = await readMetafile(metafileLocationFor(disk.location));
    await expect(checkFresh(meta, disk)).resolves.toBeUndefined();
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(img, later, later);
    const err = await checkFresh(meta, disk).catch((e) => e);
    expect(err).toBeInstanceOf(MetafileError);
    expect(err.describe()).toMatch(new RegExp(`^${img}\\.blocklist\\.bin: stale: .*\\(run vhdsync createmeta ${img}\\)$`));
    // The image may also be given by location; it is opened for the check and closed again.
    await expect(checkFresh(meta, { store: localStore, path: img })).rejects.toThrow(/stale/);
    await meta.close();
    await disk.close();
  });

  it('applies VhdBlockBackup\'s rule to vbb files: not older than the image', async () => {
    const img = path.join(tmp.dir, 'v.raw');
    fs.writeFileSync(img, randomBytes(3 << 20));
    const disk = await openDisk(img);
    await createMetafile(disk, { layout: 'vbb' });
    const loc = metafileLocationFor({ store: localStore, path: img });
    const meta = await readMetafile(loc, { virtualSize: disk.virtualSize });
    await expect(checkFresh(meta, disk)).resolves.toBeUndefined();
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(img, later, later);
    await expect(checkFresh(meta, disk)).rejects.toThrow(/stale: the metafile is older than the image/);
    await meta.close();
    await disk.close();
  });
});
