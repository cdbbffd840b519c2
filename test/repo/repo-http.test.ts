/**
 * Backup repositories over HTTP(S): `backup URL` from exports of our `serve` (VHD and raw streams, http and https)
 * and of python3's http.server serving VHD streams built as vhd-tool and Xen Orchestra build them; `restore --to URL`
 * into serve's import. Every kept point is restored and compared by SHA-256; a damaged point must leave the target
 * disk untouched (serve commits an import only when it is complete).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliAsync, expectOneLineError } from '../helpers/cli.js';
import { startRecorder } from '../helpers/http-recorder.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, haveTool, requireTool, run } from '../helpers/tools.js';
import { produceVhd, VHD_TOOL, XEN_ORCHESTRA } from '../helpers/vhd-producers.js';
import { leftovers, serveDir } from '../serve/serve-helpers.js';
import { contentSha, listed, rawDisk, restoredSha, scribble, sha256File, strays } from './repo-helpers.js';

const MiB = 1 << 20;
const SIZE = 8 * MiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** python3 -m http.server on `dir`, on a free port; resolves once it listens. */
function pythonServer(dir: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn('/usr/bin/python3', ['-u', '-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d) => {
      text += d;
      const m = /port (\d+)/.exec(text);
      if (m) resolve({ url: `http://127.0.0.1:${m[1]}`, child });
    });
    child.stderr!.resume();
    child.on('exit', (code) => reject(new Error(`python3 http.server exited (${code}): ${text}`)));
  });
}

describe('backup from and restore to HTTP(S)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let disks: string;
  let repo: string;
  let server: Awaited<ReturnType<typeof serveDir>>;
  let tlsServer: Awaited<ReturnType<typeof serveDir>> | null = null;
  let python: ChildProcess | null = null;
  const p = (n: string) => path.join(tmp.dir, n);

  beforeAll(async () => {
    tmp = makeTempDir('repo-http-');
    disks = p('disks');
    fs.mkdirSync(disks);
    repo = p('repo');
    rawDisk(path.join(disks, 'vm1.raw'), SIZE, [[0, MiB, 0x11], [5 * MiB, 512, 0x22]]);
    server = await serveDir(disks);
    if (haveTool('openssl')) {
      const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('key.pem'), '-out', p('cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
      if (made.status === 0) tlsServer = await serveDir(disks, { tls: { cert: fs.readFileSync(p('cert.pem')), key: fs.readFileSync(p('key.pem')) } });
    }
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    await tlsServer?.close();
    python?.kill();
    tmp.cleanup();
  });

  it('serve exports (VHD, raw and QCOW2 streams, http and https) make a chain whose every kept point restores byte-identical', async () => {
    const src = path.join(disks, 'vm1.raw');
    const history = new Map<string, string>();
    const rounds: Array<{ url: string; extra: string[]; change: Array<[number, number, number]> }> = [
      { url: `${server.url}/export_raw_vdi?vdi=vm1&format=vhd`, extra: [], change: [] },
      { url: `${server.url}/export_raw_vdi?vdi=vm1&format=raw&session_id=OpaqueRef:secret`, extra: [], change: [[2 * MiB + 4096, 8192, 0x33]] },
      { url: `${(tlsServer ?? server).url}/export_raw_vdi?vdi=vm1&format=vhd`, extra: tlsServer ? ['--ca-cert', p('cert.pem')] : [], change: [[0, 4096, 0], [7 * MiB, MiB, 0x44]] },
      { url: `${server.url}/export_raw_vdi/?vdi=vm1&format=qcow2`, extra: [], change: [[6 * MiB, 100, 0x55]] },
    ];
    if (!tlsServer) console.log('HTTPS part skipped: openssl could not make a certificate');
    for (const [i, round] of rounds.entries()) {
      scribble(src, round.change);
      const r = await cliAsync(['backup', round.url, '--repo', repo, '--name', 'vm1', '--keep', '3', '--json', ...round.extra]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const s = JSON.parse(r.stdout) as { point: string; kind: string; changedBytes: number; source: string };
      history.set(s.point, sha256File(src));
      // The session reference is a credential: never in the manifest or the output.
      expect(s.source).not.toMatch(/secret/);
      if (i === 0) expect(s.kind).toBe('full');
      else {
        expect(s.kind).toBe('diff');
        // Only the 2 MiB blocks the round wrote differ.
        expect(s.changedBytes).toBe(new Set(round.change.flatMap(([o, l]) => [Math.floor(o / (2 * MiB)), Math.floor((o + l - 1) / (2 * MiB))])).size * 2 * MiB);
      }
      const [d] = await listed(repo);
      expect(d.points.length).toBe(Math.min(3, i + 1));
      for (const pt of d.points) expect(await restoredSha(repo, 'vm1', pt.id, tmp.dir)).toBe(history.get(pt.id));
    }
    expect(fs.readFileSync(path.join(repo, 'vm1', 'manifest.json'), 'utf8')).not.toMatch(/secret/);
    expect(strays(path.join(repo, 'vm1'))).toEqual([]);
  }, 180_000);

  it('VHD streams as vhd-tool, Xen Orchestra and qemu-img produce them, served by python3 http.server or without Content-Length as XAPI sends them; an error page or a truncated one adds no point', async () => {
    if (!requireTool(fs.existsSync('/usr/bin/python3'), 'python3')) return;
    const web = p('web');
    fs.mkdirSync(web);
    const size = 6 * MiB + 1536;
    const caml = produceVhd(VHD_TOOL, size, [0, 2]);
    const xo = produceVhd(XEN_ORCHESTRA, size, [1, 3]);
    fs.writeFileSync(path.join(web, 'caml.vhd'), caml.file);
    fs.writeFileSync(path.join(web, 'xo.vhd'), xo.file);
    fs.writeFileSync(path.join(web, 'cut.vhd'), xo.file.subarray(0, xo.file.length - 700));
    const haveQemu = requireTool(HAVE_QEMU, 'qemu-img (its VHD as a source)');
    const plain = rawDisk(p('plain.raw'), size, [[MiB, 3 * MiB, 0x66]]);
    if (haveQemu) run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', plain, path.join(web, 'qemu.vhd')]);
    const py = await pythonServer(web);
    python = py.child;
    const sources: Array<[string, string]> = [['caml', sha(caml.content)], ['xo', sha(xo.content)], ...(haveQemu ? [['qemu', sha256File(plain)] as [string, string]] : [])];
    for (const [name, want] of sources) {
      const r = await cliAsync(['backup', `${py.url}/${name}.vhd`, '--repo', repo, '--name', 'px', '--json']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const id = (JSON.parse(r.stdout) as { point: string }).point;
      expect(await restoredSha(repo, 'px', id, tmp.dir)).toBe(want);
    }
    const before = (await listed(repo)).find((d) => d.name === 'px')!.points.map((x) => x.id);
    expectOneLineError(await cliAsync(['backup', `${py.url}/cut.vhd`, '--repo', repo, '--name', 'px']), 1, /truncated|past the stream's length/);
    expect((await listed(repo)).find((d) => d.name === 'px')!.points.map((x) => x.id)).toEqual(before);
    // The next run of the disk removes what the failed one left.
    const again = await cliAsync(['backup', `${py.url}/caml.vhd`, '--repo', repo, '--name', 'px', '-q']);
    expect(again.status).toBe(0);
    expect(strays(path.join(repo, 'px'))).toEqual([]);
    expectOneLineError(await cliAsync(['backup', `${py.url}/caml.vhd`, '--repo', repo]), 2, /--name/);
    expectOneLineError(await cliAsync(['backup', 'http://[nonsense/x.vhd', '--repo', repo, '--name', 'px']), 2, /not a valid URL/);
    // As XAPI sends exports: no Content-Length. A VHD stream carries its own end; raw bytes do not say the disk's size.
    const rec = await startRecorder({ kind: 'get', body: xo.file, contentLength: false });
    try {
      const r = await cliAsync(['backup', `http://127.0.0.1:${rec.port}/export_raw_vdi?vdi=px&format=vhd`, '--repo', repo, '--json']);
      expect(r.status).toBe(0);
      expect(await restoredSha(repo, 'px', JSON.parse(r.stdout).point, tmp.dir)).toBe(sha(xo.content));
      rec.behaviour = { kind: 'get', body: xo.content, contentLength: false };
      expectOneLineError(await cliAsync(['backup', `http://127.0.0.1:${rec.port}/export_raw_vdi?vdi=px`, '--repo', repo]), 2, /raw export without Content-Length .* format=vhd/);
      rec.behaviour = { kind: 'get', body: Buffer.from('HTTP/1.1 500 Internal Error\r\n\r\n<html><body>VDI_IO_ERROR Device I/O errors</body></html>'), contentLength: false };
      expectOneLineError(await cliAsync(['backup', `http://127.0.0.1:${rec.port}/export_raw_vdi?vdi=px&format=vhd`, '--repo', repo]), 1, /error page instead of data: .*VDI_IO_ERROR/);
    } finally {
      await rec.close();
    }
    // Credentials in the URL work (with vhd-tool's warning) and are never recorded or printed.
    const withCreds = await cliAsync(['backup', py.url.replace('//', '//root:hunter2@') + '/xo.vhd', '--repo', repo, '--name', 'px', '--json']);
    expect(withCreds.status).toBe(0);
    expect(withCreds.stderr).toMatch(/^vhdsync: warning: credentials in the URL[^\n]*\n$/);
    expect(withCreds.stdout + fs.readFileSync(path.join(repo, 'px', 'manifest.json'), 'utf8')).not.toMatch(/hunter2/);
  }, 120_000);

  it('restore --to a serve import URL (raw and VHD), every block checked; a damaged point leaves the target disk unchanged', async () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img and qemu-io')) return;
    const [d] = (await listed(repo)).filter((x) => x.name === 'vm1');
    const newest = d.points[d.points.length - 1].id;
    const want = await restoredSha(repo, 'vm1', newest, tmp.dir);
    // VHDX and QCOW2 targets: serve writes imports into them all or nothing (raw disks are written in place).
    const target = path.join(disks, 'target.vhdx');
    run('qemu-img', ['create', '-q', '-f', 'vhdx', target, String(SIZE)]);
    run('qemu-io', ['-f', 'vhdx', '-c', `write -P 0x99 ${3 * MiB} ${MiB}`, target]);
    const r = await cliAsync(['restore', '--repo', repo, 'vm1', '--to', `${server.url}/import_raw_vdi?vdi=target&format=raw`, '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ point: newest, format: 'raw', verified: true, bytesWritten: SIZE });
    expect(contentSha(target, 'vhdx', tmp.dir)).toBe(want);
    // VHD into a fresh (zero) disk, as XAPI wants a VHD import.
    const fresh = path.join(disks, 'fresh.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', fresh, String(SIZE)]);
    const v = await cliAsync(['restore', '--repo', repo, 'vm1', '--to', `${server.url}/import_raw_vdi?vdi=fresh`, '--format', 'vhd', '-q']);
    expect(v.stderr).toBe('');
    expect(v.status).toBe(0);
    expect(contentSha(fresh, 'qcow2', tmp.dir)).toBe(want);

    // Damage the newest point's last data block: the restore fails after some blocks went out.
    const image = path.join(repo, 'vm1', `${newest}.vhdx`);
    const bytes = fs.readFileSync(image);
    const at = bytes.lastIndexOf(Buffer.alloc(64, 0x44));
    expect(at).toBeGreaterThan(0);
    fs.copyFileSync(image, image + '.keep');
    scribble(image, [[at, 1, 0x45]]);
    run('qemu-io', ['-f', 'vhdx', '-c', `write -P 0x77 0 ${MiB}`, target]);
    const before = contentSha(target, 'vhdx', tmp.dir);
    const bad = await cliAsync(['restore', '--repo', repo, 'vm1', '--to', `${server.url}/import_raw_vdi?vdi=target&format=raw`]);
    expectOneLineError(bad, 1, new RegExp(`restore point ${newest} of disk 'vm1' is damaged \\(block \\d+ at offset \\d+ differs from its metafile\\)`));
    // The server notices the cut upload on its own time: wait for it to drop the hidden import image.
    const keep = ['vm1.raw', 'target.vhdx', 'fresh.qcow2'];
    for (let i = 0; i < 600 && leftovers(disks, keep).length; i++) await new Promise((res) => setTimeout(res, 100));
    expect(leftovers(disks, keep)).toEqual([]);
    expect(contentSha(target, 'vhdx', tmp.dir)).toBe(before);
    fs.renameSync(image + '.keep', image);
    expectOneLineError(await cliAsync(['restore', '--repo', repo, 'vm1', '--to', `${server.url}/import_raw_vdi?vdi=target&format=vhd`, '--format', 'raw']), 2, /contradicts/);
  }, 120_000);

  it('restore --to sends the very request stream --destination sends (recorded as XAPI would take it)', async () => {
    const rec = await startRecorder({ kind: 'xapi' });
    try {
      const [d] = (await listed(repo)).filter((x) => x.name === 'vm1');
      const id = d.points[0].id;
      const file = p('as-restored.raw');
      const r = await cliAsync(['restore', '--repo', repo, 'vm1', '--at', id, '--to', `http://127.0.0.1:${rec.port}/import_raw_vdi?vdi=OpaqueRef:9`, '-q'], {
        env: { VHDSYNC_HTTP_USER: 'root', VHDSYNC_HTTP_PASSWORD: 'pw' },
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect((await cliAsync(['restore', '--repo', repo, 'vm1', '--at', id, '--to', file, '-q'])).status).toBe(0);
      const s = await cliAsync(['stream', '--source', file, '--destination', `http://127.0.0.1:${rec.port}/import_raw_vdi?vdi=OpaqueRef:9`, '-q'], {
        env: { VHDSYNC_HTTP_USER: 'root', VHDSYNC_HTTP_PASSWORD: 'pw' },
      });
      expect(s.status).toBe(0);
      const [ours, theirs] = rec.requests;
      expect(ours.method).toBe('PUT');
      expect(ours.target).toBe('/import_raw_vdi?vdi=OpaqueRef%3A9&format=raw');
      expect(ours.bodyBeforeResponse).toBe(0);
      expect(ours.headers['content-length']).toBe(String(SIZE));
      expect({ ...ours, body: sha(ours.body) }).toEqual({ ...theirs, body: sha(theirs.body) });
      expect(sha(ours.body)).toBe(await restoredSha(repo, 'vm1', id, tmp.dir));
    } finally {
      await rec.close();
    }
  }, 120_000);
});
