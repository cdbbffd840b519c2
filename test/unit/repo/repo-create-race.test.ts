/**
 * Two backups making one new repository at the same moment: the one that looks second may find the folder already
 * holding the other's marker and disk folder. It must take the folder for the repository it now is, not refuse it
 * as "not empty" (seen in the two-process test under load; reproduced here exactly, without timing).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalStore } from '../../../src/io/local.js';
import { FileRepository, REPOSITORY_MARKER } from '../../../src/repo/file-backend.js';
import { makeTempDir } from '../../helpers/tmp.js';

/** A local store on which the first listing of `root` happens just after another process made the repository. */
class RacedStore extends LocalStore {
  private raced = false;
  constructor(private readonly root: string) {
    super();
  }
  override async list(dir: string): Promise<string[]> {
    if (dir === this.root && !this.raced) {
      this.raced = true;
      fs.writeFileSync(path.join(this.root, REPOSITORY_MARKER), JSON.stringify({ format: 'vhdsync-repository', version: 1, created: new Date().toISOString() }) + '\n');
      fs.mkdirSync(path.join(this.root, 'other-disk'));
    }
    return super.list(dir);
  }
}

describe('repository creation race', () => {
  it('a folder that became a repository between the first look and the listing is taken as one', async () => {
    const tmp = makeTempDir();
    try {
      const root = path.join(tmp.dir, 'repo');
      fs.mkdirSync(root);
      const repo = new FileRepository({ store: new RacedStore(root), path: root });
      await expect(repo.exists(true)).resolves.toBe(true);
    } finally {
      tmp.cleanup();
    }
  });

  it('a folder holding other files and no marker is still refused', async () => {
    const tmp = makeTempDir();
    try {
      const root = path.join(tmp.dir, 'repo');
      fs.mkdirSync(root);
      fs.writeFileSync(path.join(root, 'notes.txt'), 'mine\n');
      const repo = new FileRepository({ store: new LocalStore(), path: root });
      await expect(repo.exists(true)).rejects.toThrow(/not a vhdsync repository .* and not empty/);
    } finally {
      tmp.cleanup();
    }
  });
});
