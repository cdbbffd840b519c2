import fs from 'node:fs';
import * as path from 'node:path';
import { jest } from '@jest/globals';
import fc from 'fast-check';
import { localStore } from '../../../src/io/local.js';
import { writeAtomically } from '../../../src/io/atomic.js';
import { parseLocation } from '../../../src/io/location.js';
import { AlreadyExistsError, IoError, NotFoundError, UsageError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';

describe('local byte store', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeEach(() => (tmp = makeTempDir()));
  afterEach(() => tmp.cleanup());

  it('does positioned reads and writes that match a model', async () => {
    const p = path.join(tmp.dir, 'f');
    const f = await localStore.createExclusive(p);
    const model = Buffer.alloc(1 << 16);
    await fc.assert(
      fc.asyncProperty(fc.nat((1 << 16) - 1), fc.uint8Array({ minLength: 1, maxLength: 4096 }), async (pos, data) => {
        const d = Buffer.from(data.subarray(0, model.length - pos));
        await f.write(pos, d);
        d.copy(model, pos);
      }),
      { numRuns: 100 },
    );
    await f.truncate(model.length);
    expect((await f.read(0, model.length)).equals(model)).toBe(true);
    expect((await f.read(model.length - 10, 100)).length).toBe(10);
    await f.flush();
    await f.close();
  });

  it('with syncIo reads and writes on the calling thread, with the same results as through the thread pool', async () => {
    const a = path.join(tmp.dir, 'a');
    const b = path.join(tmp.dir, 'b');
    fs.writeFileSync(a, Buffer.alloc(1 << 14));
    fs.writeFileSync(b, Buffer.alloc(1 << 14));
    const pooled = await localStore.open(a, 'readwrite');
    const same = await localStore.open(b, 'readwrite', { syncIo: true });
    const read = jest.spyOn(fs, 'readSync');
    const write = jest.spyOn(fs, 'writeSync');
    try {
      const op = fc.oneof(
        fc.record({ kind: fc.constant('write' as const), pos: fc.nat(1 << 15), data: fc.uint8Array({ minLength: 1, maxLength: 5000 }) }),
        // Reads past the end come back short, as through the pool.
        fc.record({ kind: fc.constant('read' as const), pos: fc.nat(1 << 15), len: fc.integer({ min: 1, max: 9000 }) }),
      );
      await fc.assert(
        fc.asyncProperty(op, async (o) => {
          read.mockClear();
          write.mockClear();
          if (o.kind === 'write') {
            await pooled.write(o.pos, o.data);
            let settled = false;
            void same.write(o.pos, o.data).then(() => (settled = true));
            // Done before the call returned: one microtask later the promise has settled, no thread pool involved.
            await Promise.resolve();
            expect(settled).toBe(true);
            expect(write).toHaveBeenCalled();
          } else {
            const got = await same.read(o.pos, o.len);
            expect(read).toHaveBeenCalled();
            expect(got.equals(await pooled.read(o.pos, o.len))).toBe(true);
          }
          expect(await same.size()).toBe(await pooled.size());
        }),
        { numRuns: 150 },
      );
      expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
    } finally {
      read.mockRestore();
      write.mockRestore();
      await pooled.close();
      await same.close();
    }
  });

  it('refuses to create over an existing file and reports missing ones clearly', async () => {
    const p = path.join(tmp.dir, 'f');
    fs.writeFileSync(p, 'x');
    await expect(localStore.createExclusive(p)).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(localStore.open(path.join(tmp.dir, 'nope'), 'read')).rejects.toBeInstanceOf(NotFoundError);
    expect(await localStore.stat(path.join(tmp.dir, 'nope'))).toBeNull();
    expect(await localStore.list(tmp.dir)).toEqual(['f']);
  });

  it('writes atomically: nothing under the final name when the body fails', async () => {
    const target = await parseLocation(path.join(tmp.dir, 'out.img'));
    await expect(
      writeAtomically(target, async (temp) => {
        const f = await temp.store.createExclusive(temp.path);
        await f.write(0, Buffer.from('partial'));
        await f.close();
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(fs.readdirSync(tmp.dir)).toEqual([]);

    await writeAtomically(target, async (temp) => {
      const f = await temp.store.createExclusive(temp.path);
      await f.write(0, Buffer.from('done'));
      await f.close();
    });
    expect(fs.readFileSync(target.path, 'utf8')).toBe('done');
    await expect(writeAtomically(target, async () => {})).rejects.toBeInstanceOf(AlreadyExistsError);
  });

  it('renames without replacing when asked, and writeAtomically never replaces a file that appeared meanwhile', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => path.join(tmp.dir, n));
    fs.writeFileSync(a, 'from a');
    fs.writeFileSync(b, 'from b');
    await expect(localStore.rename(a, b, { replace: false })).rejects.toBeInstanceOf(AlreadyExistsError);
    expect([fs.readFileSync(a, 'utf8'), fs.readFileSync(b, 'utf8')]).toEqual(['from a', 'from b']);
    await localStore.rename(a, c, { replace: false });
    expect(fs.existsSync(a)).toBe(false);
    expect(fs.readFileSync(c, 'utf8')).toBe('from a');

    const target = { store: localStore, path: path.join(tmp.dir, 'out') };
    const err = await writeAtomically(target, async (temp) => {
      const f = await localStore.createExclusive(temp.path);
      await f.write(0, Buffer.from('mine'));
      await f.close();
      fs.writeFileSync(target.path, 'another run');
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect((err as AlreadyExistsError).describe()).toBe(`${target.path}: appeared while this run was writing it (another run?); left as it is`);
    expect(fs.readFileSync(target.path, 'utf8')).toBe('another run');
    expect(fs.readdirSync(tmp.dir).filter((n) => n.endsWith('.partial'))).toEqual([]);
  });

  it('names the final file, never the hidden temp name, when the temp file cannot be made', async () => {
    const target = await parseLocation(path.join(tmp.dir, 'out.img'));
    const denied = new IoError('permission denied', 'placeholder');
    const err = await writeAtomically(target, async (temp) => {
      throw denied.withSubject(temp.path);
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IoError);
    expect((err as IoError).describe()).toBe(`${target.path}: permission denied`);
    await expect(writeAtomically(await parseLocation(path.join(tmp.dir, 'no/such/dir/x')), async () => {})).rejects.toThrow(/no such directory/);
  });

  it('refuses unknown URL schemes', async () => {
    await expect(parseLocation('ftp://host/x')).rejects.toBeInstanceOf(UsageError);
  });
});
