/**
 * Local files opened with OpenHints.writeBehind and syncIo (io/local.ts, decision 0036): what is written is read back
 * whatever the piece sizes (calling-thread and pool paths alike), and a background write-back that fails is thrown by
 * the next flush and by close, which still closes the descriptor; nothing is left unhandled.
 */
import fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { localStore } from '../../../src/io/local.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;

describe('local files written behind', () => {
  const tmp = makeTempDir('vhdsync-write-behind-');
  afterAll(() => tmp.cleanup());

  it('read back what was written, pieces small and large, on the calling thread and the pool', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 0, max: 24 * MiB }), fc.integer({ min: 1, max: 2 * MiB })), { minLength: 1, maxLength: 12 }), async (pieces) => {
        const file = path.join(tmp.dir, `wb${n++}`);
        const f = await localStore.createExclusive(file, { syncIo: true, writeBehind: true });
        const model = Buffer.alloc(27 * MiB);
        let end = 0;
        for (const [at, length] of pieces) {
          const data = randomBytes(length);
          await f.write(at, data);
          data.copy(model, at);
          end = Math.max(end, at + length);
        }
        await f.flush();
        await f.close();
        expect(fs.readFileSync(file).equals(model.subarray(0, end))).toBe(true);
        fs.rmSync(file);
      }),
      { numRuns: 12 },
    );
  });

  it('throw a failed write-back at the next flush and at close, and still close the descriptor', async () => {
    const file = path.join(tmp.dir, 'failing');
    const f = await localStore.createExclusive(file, { syncIo: true, writeBehind: true });
    // The handle's fdatasync fails as a disk that lost the writes would report it.
    const fh = (f as unknown as { fh: { fd: number; datasync: () => Promise<void> } }).fh;
    fh.datasync = () => Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' }));
    const fd = fh.fd;
    for (let i = 0; i < 10; i++) await f.write(i * MiB, randomBytes(MiB));
    await expect(f.flush()).rejects.toThrow(/input\/output error/);
    await expect(f.flush()).rejects.toThrow(/input\/output error/);
    await expect(f.close()).rejects.toThrow(/input\/output error/);
    expect(() => fs.fstatSync(fd)).toThrow(/EBADF/);
  });
});
