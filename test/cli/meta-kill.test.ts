/**
 * A createmeta killed with SIGKILL midway never leaves a partial metafile under the real name: the previous
 * metafile (or none) stays.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { BIN, cli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';

const GiB = 1 << 30;
const MiB = 1 << 20;

/**
 * Starts createmeta and kills it with SIGKILL once its temp file holds `atLeast` bytes of entries: provably
 * midway, since the final list is several times larger and is renamed into place only at the end.
 */
async function killMidway(dir: string, image: string, args: string[], atLeast = 2 << 20): Promise<{ signal: NodeJS.Signals | null; partialBytes: number }> {
  const child = spawn(process.execPath, [BIN, 'createmeta', ...args, image], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  const deadline = Date.now() + 60_000;
  let partialBytes = 0;
  while (child.exitCode === null && Date.now() < deadline) {
    const partial = fs.readdirSync(dir).find((n) => n.endsWith('.partial'));
    partialBytes = partial ? (fs.statSync(path.join(dir, partial), { throwIfNoEntry: false })?.size ?? 0) : 0;
    if (partialBytes >= atLeast) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  child.kill('SIGKILL');
  return { signal: await exited, partialBytes };
}

describe('killed createmeta', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let image: string;
  beforeAll(() => {
    tmp = makeTempDir();
    // 1 GiB sparse, but every 2 MiB block holds a byte of data, so it is all read; 4 KiB blocks of SHA-256 make
    // an 8.6 MB list, written in 1 MiB batches.
    image = path.join(tmp.dir, 'big.raw');
    const fd = fs.openSync(image, 'w');
    fs.ftruncateSync(fd, GiB);
    const one = Buffer.from([0x5a]);
    for (let off = 0; off < GiB; off += 2 * MiB) fs.writeSync(fd, one, 0, 1, off + 1234);
    fs.closeSync(fd);
  });
  afterAll(() => tmp.cleanup());
  const meta = () => `${image}.blocklist.bin`;

  it('leaves no metafile when there was none', async () => {
    const k = await killMidway(tmp.dir, image, ['--hash', 'sha256', '--block-size', '4K']);
    expect(k).toMatchObject({ signal: 'SIGKILL' });
    expect(k.partialBytes).toBeGreaterThanOrEqual(2 << 20);
    expect(fs.existsSync(meta())).toBe(false);
  });

  it('leaves the previous metafile intact and usable', async () => {
    expect(cli(['createmeta', image]).status).toBe(0);
    const before = fs.readFileSync(meta());
    const k = await killMidway(tmp.dir, image, ['--hash', 'sha256', '--block-size', '4K']);
    expect(k).toMatchObject({ signal: 'SIGKILL' });
    expect(k.partialBytes).toBeGreaterThanOrEqual(2 << 20);
    expect(fs.readFileSync(meta()).equals(before)).toBe(true);
    const v = cli(['validate', image]);
    expect(v.stdout).toMatch(/matches the image \(512 blocks\)/);
    expect(v.status).toBe(0);
  });
});
