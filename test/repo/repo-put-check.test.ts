/**
 * `restore --to URL` must not send any byte of a damaged point (an all-or-nothing server would commit a complete
 * upload, one that writes in place keeps what came before the damage): every block is checked before the first byte.
 * Damage made by hand (a VHDX BAT entry cleared, so a block the metafile lists as data reads as zeros; a flipped data
 * byte), the stream sent to an in-process target that counts what it got.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { backupDisk, openRepository, restorePoint, type StreamTarget } from '../../src/repo/index.js';
import type { EncodedStream, StreamFormat } from '../../src/stream/index.js';
import { chunkLength } from '../../src/stream/encoded.js';
import { parseLocation } from '../../src/io/location.js';
import { RepositoryDamageError } from '../../src/util/errors.js';
import { rawDisk } from './repo-helpers.js';

const MiB = 1 << 20;
const BAT_GUID = Buffer.from('6677c22d23f600429d64115e9bfd4a08', 'hex');

/** Clears the BAT entry of the last payload block holding `fill` in a VHDX file (the block then reads as zeros). */
function dropLastBlockWith(file: string, fill: number): void {
  const f = readFileSync(file);
  const table = 192 * 1024;
  let bat = -1;
  let batLength = 0;
  for (let i = 0; i < f.readUInt32LE(table + 8); i++) {
    const e = table + 16 + i * 32;
    if (f.subarray(e, e + 16).equals(BAT_GUID)) [bat, batLength] = [Number(f.readBigUInt64LE(e + 16)), f.readUInt32LE(e + 24)];
  }
  let last = -1;
  for (let i = 0; i < batLength / 8; i++) {
    const v = f.readBigUInt64LE(bat + i * 8);
    const at = Number(v >> 20n) * MiB;
    if ((Number(v & 7n) === 6 || Number(v & 7n) === 7) && at && f.subarray(at, at + 2 * MiB).includes(fill)) last = i;
  }
  if (last < 0) throw new Error(`no block of ${file} holds ${fill}`);
  f.writeBigUInt64LE(0n, bat + last * 8);
  writeFileSync(file, f);
}

/** A target that reads the whole stream, counting bytes, as a server would receive them. */
function counter(format: StreamFormat): StreamTarget & { received: number; length: number } {
  const t = {
    kind: 'stream' as const,
    display: 'test target',
    format,
    received: 0,
    length: -1,
    async send(stream: EncodedStream) {
      t.length = stream.length;
      for await (const c of stream.chunks()) t.received += chunkLength(c);
    },
  };
  return t;
}

describe('restore to a stream target refuses a damaged point before the first byte', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let repo: Awaited<ReturnType<typeof openRepository>>;

  beforeAll(async () => {
    tmp = makeTempDir('repo-put-check-');
    const source = rawDisk(path.join(tmp.dir, 'vm.raw'), 8 * MiB, [[0, MiB, 0x11], [7 * MiB, MiB, 0x44]]);
    repo = await openRepository(path.join(tmp.dir, 'repo'), false);
    const s = await backupDisk(repo, await parseLocation(source), 'tail', { reflink: 'never', now: () => new Date('2026-01-01T00:00:00Z') });
    dropLastBlockWith(path.join(tmp.dir, 'repo', 'tail', `${s.point}.vhdx`), 0x44);
    const m = await backupDisk(repo, await parseLocation(source), 'middle', { reflink: 'never', now: () => new Date('2026-01-01T00:00:00Z') });
    const image = path.join(tmp.dir, 'repo', 'middle', `${m.point}.vhdx`);
    const f = readFileSync(image);
    f[f.indexOf(Buffer.alloc(4096, 0x44)) + 100] ^= 1;
    writeFileSync(image, f);
  });
  afterAll(() => tmp?.cleanup());

  // qcow2 and vhdx leave the zeroed tail block out of the stream: its check used to come after the last byte.
  it.each(['qcow2', 'vhdx', 'vhd', 'raw'] as StreamFormat[])('%s: damage in a block the stream leaves out', async (format) => {
    const target = counter(format);
    await expect(restorePoint(repo, 'tail', target, {})).rejects.toThrow(RepositoryDamageError);
    expect(target.received).toBe(0);
  });

  // A target that writes in place keeps the blocks it got before the damage: the whole point is read first.
  it.each(['raw', 'vhd', 'qcow2', 'vhdx'] as StreamFormat[])('%s: damage in a data block after others', async (format) => {
    const target = counter(format);
    await expect(restorePoint(repo, 'middle', target, {})).rejects.toThrow(/block \d+ at offset \d+ differs from its metafile/);
    expect(target.received).toBe(0);
  });
});
