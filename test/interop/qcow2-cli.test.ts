/**
 * The commands that read images, on QCOW2 chains qemu makes: info, get, convert, createmeta, check, validate.
 * Metafiles are format-independent: a QCOW2 chain and a VHDX of the same content compare equal.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run, runStatus } from '../helpers/tools.js';
import { randomWrites } from './qcow2-helpers.js';

const MiB = 1 << 20;
const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

d('QCOW2 through the CLI', () => {
  const tmp = makeTempDir('qcow2-cli-');
  afterAll(() => tmp.cleanup());
  const p = (n: string) => path.join(tmp.dir, n);
  const base = p('base.qcow2');
  const top = p('top.qcow2');
  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '20M']);
    run('qemu-io', ['-f', 'qcow2', ...randomWrites(20 * MiB, 41, 40, 600 * 1024), base]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
    run('qemu-io', ['-f', 'qcow2', ...randomWrites(20 * MiB, 42, 30, 300 * 1024, 0.4), top]);
  });

  test('convert flattens the chain to raw and VHDX as qemu reads it', () => {
    run('qemu-img', ['convert', '-O', 'raw', top, p('qemu.raw')]);
    const r = cli(['convert', top, p('ours.raw'), '--json']);
    expect(r.status).toBe(0);
    expect(readFileSync(p('ours.raw')).equals(readFileSync(p('qemu.raw')))).toBe(true);
    expect(cli(['convert', top, p('ours.vhdx')]).status).toBe(0);
    expect(run('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'qcow2', p('ours.vhdx'), top]).length).toBe(0);
  });

  test('info --json and get show the QCOW2 fields and the chain', () => {
    const info = JSON.parse(cli(['info', '--json', top]).stdout);
    expect(info).toMatchObject({ format: 'qcow2', type: 'differencing', version: 3, backingFile: 'base.qcow2', backingFormat: 'qcow2', clusterSize: 65536, virtualSize: 20 * MiB });
    expect(info.chain).toEqual([`qcow2 differencing ${top}`, `qcow2 dynamic ${base}`]);
    expect(cli(['get', base, 'cluster-size']).stdout.trim()).toBe('4096');
    expect(cli(['get', top, 'format']).stdout.trim()).toBe('qcow2');
    const text = cli(['info', top]).stdout;
    for (const label of ['Version:', 'Header Length:', 'Virtual Size:', 'Backing File:', 'Crypt Method:', 'Cluster Size:', 'Refcount Table Clusters:', 'L1 Size:', 'L2 Entries:', 'Nb Snapshots:', 'Features:']) {
      expect(text).toContain(label);
    }
  });

  test('createmeta of a QCOW2 chain and of a VHDX with the same content: check finds 0 changed blocks; validate passes', () => {
    run('qemu-img', ['convert', '-O', 'vhdx', top, p('same.vhdx')]);
    expect(cli(['createmeta', top, p('same.vhdx')]).status).toBe(0);
    const c = JSON.parse(cli(['check', '--json', top, p('same.vhdx')]).stdout);
    expect(c.changedBlocks).toBe(0);
    expect(c.totalBlocks).toBeGreaterThan(0);
    expect(cli(['validate', top]).status).toBe(0);
    // A changed QCOW2 is seen as changed: its metafile is stale, and after createmeta the changed blocks show.
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x99 5M 10k', top]);
    expectOneLineError(cli(['check', top, p('same.vhdx')]), 1, /stale/);
    expect(cli(['createmeta', top]).status).toBe(0);
    expect(JSON.parse(cli(['check', '--json', top, p('same.vhdx')]).stdout).changedBlocks).toBe(1);
  });

  test('create and convert write QCOW2 that qemu-img checks clean and compares equal; --cluster-size and --parent', () => {
    expect(cli(['convert', top, p('flat.qcow2'), '--cluster-size', '16K']).status).toBe(0);
    expect(runStatus('qemu-img', ['check', p('flat.qcow2')]).status).toBe(0);
    expect(runStatus('qemu-img', ['compare', p('flat.qcow2'), top]).status).toBe(0);
    expect(JSON.parse(run('qemu-img', ['info', '--output=json', p('flat.qcow2')]).toString())['cluster-size']).toBe(16384);
    expect(cli(['create', p('over.qcow2'), '--parent', p('flat.qcow2')]).status).toBe(0);
    expect(runStatus('qemu-img', ['check', p('over.qcow2')]).status).toBe(0);
    expect(runStatus('qemu-img', ['compare', p('over.qcow2'), top]).status).toBe(0);
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', p('over.qcow2')]).toString());
    expect([info['backing-filename'], info['backing-filename-format']]).toEqual(['flat.qcow2', 'qcow2']);
  });

  test('copy into a QCOW2 target writes TARGET_diff.qcow2 backed by it; merge folds it in; qemu checks both clean', () => {
    const t = p('sync-t.qcow2');
    const src = p('sync-s.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', t, '8M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 1 0 8M', t]);
    run('qemu-img', ['convert', '-O', 'qcow2', t, src]);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 2 1M 3M', '-c', 'write -q -z 6M 1M', '-c', 'write -q -P 3 7340100 100', src]);
    expect(cli(['createmeta', src, t]).status).toBe(0);
    expect(cli(['copy', src, t]).status).toBe(0);
    const diff = p('sync-t_diff.qcow2');
    expect(runStatus('qemu-img', ['check', diff]).status).toBe(0);
    expect(JSON.parse(run('qemu-img', ['info', '--output=json', diff]).toString())['backing-filename']).toBe('sync-t.qcow2');
    expect(runStatus('qemu-img', ['compare', diff, src]).status).toBe(0);
    expect(cli(['merge', diff]).status).toBe(0);
    expect(runStatus('qemu-img', ['check', t]).status).toBe(0);
    expect(runStatus('qemu-img', ['compare', t, src]).status).toBe(0);
    expect(cli(['validate', t]).status).toBe(0);
  });
});
