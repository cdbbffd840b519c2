import { diffNameFor } from '../../../src/sync/copy.js';
import { localStore } from '../../../src/io/local.js';

describe('diffNameFor (VhdBlockBackup naming)', () => {
  it.each([
    ['/d/target.vhdx', 'vhdx', 'target_diff.vhdx'],
    ['/d/t.vhd', 'vhd', 't_diff.vhd'],
    ['/d/my.disk.avhdx', 'vhdx', 'my.disk_diff.avhdx'],
    ['/d/noext', 'vhdx', 'noext_diff.vhdx'],
    ['/d/.hidden', 'vhd', '.hidden_diff.vhd'],
  ])('%s -> %s', (p, fmt, name) => expect(diffNameFor({ store: localStore, path: p }, fmt)).toBe(name));
});
