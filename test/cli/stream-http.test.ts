/**
 * `stream` over HTTP(S): PUTs shaped as XAPI's import wants them (checked by a recording server), GET sources, and
 * every failure (401/404/500, an HTML error page in a 200 body, a server closing early, an untrusted certificate)
 * as one line, exit 1, with no partial output file. curl and python3's http.server are the independent other side.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliAsync, expectOneLineError } from '../helpers/cli.js';
import { startRecorder, type Recorder } from '../helpers/http-recorder.js';
import { makeTempDir } from '../helpers/tmp.js';
import { applyFrames } from '../helpers/xapi-frames.js';
import { haveTool, requireTool } from '../helpers/tools.js';

const MIB = 1 << 20;

describe('stream over HTTP', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: Recorder | null = null;
  const p = (n: string) => path.join(tmp.dir, n);
  let src: Buffer;
  beforeAll(() => {
    tmp = makeTempDir('stream-http-');
    // 6 MiB, sparse: data at 0-1 MiB and one sector at 5 MiB.
    src = Buffer.alloc(6 * MIB);
    for (let i = 0; i < MIB; i++) src[i] = (i * 7 + 3) & 0xff;
    src.fill(0x5a, 5 * MIB, 5 * MIB + 512);
    fs.writeFileSync(p('src.raw'), src);
  });
  afterEach(async () => {
    await server?.close();
    server = null;
  });
  afterAll(() => tmp.cleanup());
  const url = (pathAndQuery: string, scheme = 'http') => `${scheme}://127.0.0.1:${server!.port}${pathAndQuery}`;

  it('XAPI import, raw: Content-Length, format=raw added, no body before the 200, credentials from the environment', async () => {
    server = await startRecorder({ kind: 'xapi' });
    const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination', url('/import_raw_vdi?vdi=OpaqueRef:1'), '--json'], {
      env: { VHDSYNC_HTTP_USER: 'root', VHDSYNC_HTTP_PASSWORD: 's3cret' },
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'raw', bytes: src.length });
    const [req] = server.requests;
    expect(req.method).toBe('PUT');
    expect(req.target).toBe('/import_raw_vdi?vdi=OpaqueRef%3A1&format=raw');
    expect(req.headers['content-length']).toBe(String(src.length));
    expect(req.headers['transfer-encoding']).toBeUndefined();
    expect(req.headers.authorization).toBe('Basic ' + Buffer.from('root:s3cret').toString('base64'));
    expect(req.bodyBeforeResponse).toBe(0);
    expect(req.body.equals(src)).toBe(true);
  });

  it('XAPI import, chunked frames: chunked=true in query and cookie, no length, frames rebuild the disk', async () => {
    server = await startRecorder({ kind: 'xapi' });
    fs.writeFileSync(p('creds'), 'username=admin\npassword=pw:with:colons\n');
    const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'chunked', '--destination', url('/import_raw_vdi/?vdi=x'), '--http-credentials', p('creds'), '-q']);
    expect(r.status).toBe(0);
    const [req] = server.requests;
    expect(req.target).toBe('/import_raw_vdi/?vdi=x&format=raw&chunked=true');
    expect(req.headers.cookie).toBe('chunked=true');
    expect(req.headers['content-length']).toBeUndefined();
    expect(req.headers['transfer-encoding']).toBeUndefined();
    expect(req.headers.authorization).toBe('Basic ' + Buffer.from('admin:pw:with:colons').toString('base64'));
    expect(req.bodyBeforeResponse).toBe(0);
    expect(applyFrames(req.body, Buffer.alloc(src.length)).equals(src)).toBe(true);
    // Sparse: the zero megabytes are not sent.
    expect(req.body.length).toBeLessThan(2 * MIB);
  });

  it('XAPI import, VHD: exact Content-Length; URL credentials work, warn, and are never printed', async () => {
    server = await startRecorder({ kind: 'xapi' });
    const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', url('/import_vdi?vdi=y').replace('//', '//root:hunter2@'), '--json']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^vhdsync: warning: credentials in the URL/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout + r.stderr).not.toMatch(/hunter2/);
    const [req] = server.requests;
    expect(req.target).toBe('/import_vdi?vdi=y&format=vhd');
    expect(req.headers.authorization).toBe('Basic ' + Buffer.from('root:hunter2').toString('base64'));
    expect(Number(req.headers['content-length'])).toBe(JSON.parse(r.stdout).bytes);
    expect(req.body.length).toBe(JSON.parse(r.stdout).bytes);
    if (haveTool('qemu-img')) {
      fs.writeFileSync(p('got.vhd'), req.body);
      expect(spawnSync('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', p('got.vhd'), p('src.raw')], { encoding: 'utf8' }).stdout).toMatch(/identical/);
    }
  });

  it('VHDX: a plain PUT with the exact Content-Length that qemu-img reads back; an XAPI import refuses it', async () => {
    server = await startRecorder({ kind: 'plain' });
    const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'vhdx', '--destination', url('/upload/disk.vhdx'), '--json']);
    expect(r.status).toBe(0);
    const [req] = server.requests;
    expect(Number(req.headers['content-length'])).toBe(JSON.parse(r.stdout).bytes);
    expect(req.body.length).toBe(JSON.parse(r.stdout).bytes);
    if (haveTool('qemu-img')) {
      fs.writeFileSync(p('got.vhdx'), req.body);
      expect(spawnSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', p('got.vhdx'), p('src.raw')], { encoding: 'utf8' }).stdout).toMatch(/identical/);
    }
    expectOneLineError(await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'vhdx', '--destination', url('/import_raw_vdi?vdi=v')]), 2, /XAPI imports raw, vhd, qcow2 or chunked frames, not VHDX/);
    expect(server.requests).toHaveLength(1);
  });

  it('a plain PUT sends the same method, target, Content-Length and body as curl -T and python3-requests', async () => {
    if (!requireTool(haveTool('curl'), 'curl')) return;
    server = await startRecorder({ kind: 'plain' });
    const ours = await cliAsync(['stream', '--source', p('src.raw'), '--destination', url('/upload/disk.raw')]);
    expect(ours.status).toBe(0);
    // Not spawnSync: the server runs in this process and must keep answering while the clients run.
    const exit = (cmd: string, args: string[]) => new Promise((resolve) => spawn(cmd, args, { stdio: 'ignore' }).on('exit', resolve));
    expect(await exit('curl', ['-sS', '-H', 'Expect:', '-T', p('src.raw'), url('/upload/disk.raw')])).toBe(0);
    const haveRequests = spawnSync('/usr/bin/python3', ['-c', 'import requests']).status === 0;
    if (requireTool(haveRequests, 'python3-requests')) {
      const put = "import requests, sys; r = requests.put(sys.argv[1], data=open(sys.argv[2], 'rb')); r.raise_for_status()";
      expect(await exit('/usr/bin/python3', ['-c', put, url('/upload/disk.raw'), p('src.raw')])).toBe(0);
    }
    const [a, ...others] = server.requests;
    for (const b of others) {
      expect(a.method).toBe(b.method);
      expect(a.target).toBe(b.target);
      expect(a.headers['content-length']).toBe(b.headers['content-length']);
      expect(a.headers['transfer-encoding']).toBe(b.headers['transfer-encoding']);
      expect(a.body.equals(b.body)).toBe(true);
    }
  });

  it('PUT: follows one redirect to another host, keeping the query', async () => {
    // 127.0.0.2 is another host on the loopback network, as XAPI's 302 names another pool member.
    const target = await startRecorder({ kind: 'xapi' }, undefined, '127.0.0.2');
    try {
      server = await startRecorder({ kind: 'redirect', location: `http://127.0.0.2:${target.port}/import_raw_vdi` });
      const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination', url('/import_raw_vdi?vdi=z&session_id=s')]);
      expect(r.status).toBe(0);
      expect(target.requests[0].target).toBe('/import_raw_vdi?vdi=z&session_id=s&format=raw');
      expect(target.requests[0].headers.host).toBe(`127.0.0.2:${target.port}`);
      expect(target.requests[0].body.equals(src)).toBe(true);
    } finally {
      await target.close();
    }
  });

  it('GET: follows one 302 to another host, keeping the query; a second redirect is not followed', async () => {
    const vhd = await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', p('redirected.vhd')]);
    expect(vhd.status).toBe(0);
    const target = await startRecorder({ kind: 'get', body: fs.readFileSync(p('redirected.vhd')), contentLength: false }, undefined, '127.0.0.2');
    try {
      server = await startRecorder({ kind: 'redirect', location: `http://127.0.0.2:${target.port}/export_raw_vdi` });
      const r = await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=OpaqueRef:9&format=vhd&session_id=s'), '--destination', p('redirected.raw')]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(server.requests[0].method).toBe('GET');
      expect(target.requests[0].target).toBe('/export_raw_vdi?vdi=OpaqueRef:9&format=vhd&session_id=s');
      expect(target.requests[0].headers.host).toBe(`127.0.0.2:${target.port}`);
      expect(fs.readFileSync(p('redirected.raw')).equals(src)).toBe(true);
      // The other host redirecting again: one line, nothing written.
      target.behaviour = { kind: 'redirect', location: url('/elsewhere') };
      expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=vhd'), '--destination', p('bad-redirect.raw')]), 1, /HTTP 302/);
      expect(fs.existsSync(p('bad-redirect.raw'))).toBe(false);
    } finally {
      await target.close();
    }
  });

  it.each([
    [401, 'Unauthorized', /HTTP 401 Unauthorized/],
    [404, 'Not Found', /HTTP 404 Not Found: INTERNAL_ERROR Unknown format/],
    [500, 'Internal Error', /HTTP 500 Internal Error/],
  ])('PUT answered %d: one line, exit 1', async (status, reason, why) => {
    server = await startRecorder({ kind: 'status', status, reason, html: '<html><body><h1>INTERNAL_ERROR Unknown format</h1></body></html>' });
    const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination', url('/import_raw_vdi?vdi=a')]);
    expectOneLineError(r, 1, status === 404 ? why : why);
  });

  it('a password is never printed: not on failures, not in --json, not in the summary', async () => {
    server = await startRecorder({ kind: 'status', status: 401, reason: 'Unauthorized', html: '<html><body>Authorization required</body></html>' });
    const withUrl = url('/import_raw_vdi?vdi=a').replace('//', '//root:Pa55-in-url@');
    const runs = [
      await cliAsync(['stream', '--source', p('src.raw'), '--destination', withUrl]),
      await cliAsync(['stream', '--source', withUrl.replace('import_raw_vdi', 'export_raw_vdi'), '--source-format', 'raw', '--size', '6M', '--destination', p('bad.raw')]),
      await cliAsync(['stream', '--source', p('src.raw'), '--destination', url('/import_raw_vdi?vdi=a')], { env: { VHDSYNC_HTTP_USER: 'root', VHDSYNC_HTTP_PASSWORD: 'Pa55-in-env' } }),
      // Nobody listens there: the connection error names the URL, without its password.
      await cliAsync(['stream', '--source', p('src.raw'), '--destination', 'http://root:Pa55-in-url@127.0.0.1:1/import_raw_vdi?vdi=a']),
    ];
    for (const r of runs) {
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^vhdsync: /m);
      expect(r.stdout + r.stderr).not.toMatch(/Pa55/);
    }
    server.behaviour = { kind: 'xapi' };
    const ok = await cliAsync(['stream', '--source', p('src.raw'), '--destination', withUrl, '--json']);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout).destination).toBe(url('/import_raw_vdi?vdi=a'));
    const text = await cliAsync(['stream', '--source', p('src.raw'), '--destination', withUrl]);
    expect(text.stdout).toMatch(/^streamed .* -> http:\/\/127\.0\.0\.1:\d+\/import_raw_vdi\?vdi=a \(raw, full\)/);
    expect(ok.stdout + ok.stderr + text.stdout + text.stderr).not.toMatch(/Pa55/);
  });

  it('a server that closes early: one line, exit 1', async () => {
    server = await startRecorder({ kind: 'close-after', bytes: 100000 });
    const r = await cliAsync(['stream', '--source', p('src.raw'), '--destination', url('/import_raw_vdi?vdi=a')]);
    expectOneLineError(r, 1, /closed the connection early/);
  });

  it('GET sources: a VHD export read to a file; an HTML error in a 200 body, an error status or a cut body leave no file', async () => {
    const vhd = await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', p('export.vhd')]);
    expect(vhd.status).toBe(0);
    const body = fs.readFileSync(p('export.vhd'));
    server = await startRecorder({ kind: 'get', body, contentLength: false });
    const ok = await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=vhd'), '--destination', p('got.raw')]);
    expect(ok.status).toBe(0);
    expect(fs.readFileSync(p('got.raw')).equals(src)).toBe(true);
    const xapiError = Buffer.from('HTTP/1.1 500 Internal Error\r\ncontent-type: text/html\r\n\r\n<html><body><h1>HTTP 500 internal server error</h1>VDI_TOO_LARGE</body></html>');
    server.behaviour = { kind: 'get', body: xapiError, contentLength: false };
    expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=raw'), '--source-format', 'raw', '--size', '6M', '--destination', p('bad.raw')]), 1, /error page.*VDI_TOO_LARGE/);
    // An HTML page as the whole body (no status line first) fails with its text too.
    server.behaviour = { kind: 'get', body: Buffer.from('<!DOCTYPE html>\n<html><head><title>Error</title></head><body><p>VDI_IO_ERROR: Device I/O errors</p></body></html>'), contentLength: true };
    expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=vhd'), '--destination', p('bad.vhd'), '--destination-format', 'vhd']), 1, /error page.*VDI_IO_ERROR: Device I\/O errors/);
    // A BAT entry past the length the Content-Length announces: refused before any block is written.
    const past = Buffer.from(body);
    past.writeUInt32BE(0x7fff0, 2048);
    server.behaviour = { kind: 'get', body: past, contentLength: true };
    expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=vhd'), '--destination', p('bad.raw')]), 1, /ends past the stream's length/);
    server.behaviour = { kind: 'status', status: 404, reason: 'Not Found' };
    expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a'), '--destination', p('bad.raw')]), 1, /HTTP 404/);
    server.behaviour = { kind: 'get', body, contentLength: true, cutAt: body.length - 3000 };
    expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=vhd'), '--destination', p('bad.raw')]), 1, /closed the connection .* before the end|truncated/);
    server.behaviour = { kind: 'get', body, contentLength: false, cutAt: body.length - 3000 };
    expectOneLineError(await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=a&format=vhd'), '--destination', p('bad.raw')]), 1, /truncated/);
    expect(fs.readdirSync(tmp.dir).filter((f) => f.includes('bad'))).toEqual([]);
  });

  it('GET from python3 http.server', async () => {
    if (!requireTool(haveTool('python3'), 'python3')) return;
    if (!fs.existsSync(p('export.vhd'))) {
      expect((await cliAsync(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', p('export.vhd')])).status).toBe(0);
    }
    const py = spawn('python3', ['-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', tmp.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let text = '';
        const onData = (d: Buffer) => {
          text += d.toString();
          const m = /port (\d+)/.exec(text);
          if (m) resolve(Number(m[1]));
        };
        py.stdout.on('data', onData);
        py.stderr.on('data', onData);
        py.on('exit', () => reject(new Error(`http.server exited: ${text}`)));
      });
      const r = await cliAsync(['stream', '--source', `http://127.0.0.1:${port}/export.vhd`, '--destination', p('py.raw')]);
      expect(r.stderr).toBe('');
      expect(fs.readFileSync(p('py.raw')).equals(src)).toBe(true);
    } finally {
      py.kill();
    }
  });

  it('HTTPS: verified by default, --ca-cert trusts a self-signed certificate, --insecure skips with a warning', async () => {
    if (!requireTool(haveTool('openssl'), 'openssl')) return;
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('key.pem'), '-out', p('cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
    expect(made.status).toBe(0);
    server = await startRecorder({ kind: 'xapi' }, { key: fs.readFileSync(p('key.pem')), cert: fs.readFileSync(p('cert.pem')) });
    const dest = url('/import_raw_vdi?vdi=t', 'https');
    expectOneLineError(await cliAsync(['stream', '--source', p('src.raw'), '--destination', dest]), 1, /certificate not trusted.*--ca-cert/);
    const trusted = await cliAsync(['stream', '--source', p('src.raw'), '--destination', dest, '--ca-cert', p('cert.pem')]);
    expect(trusted.status).toBe(0);
    const insecure = await cliAsync(['stream', '--source', p('src.raw'), '--destination', dest, '--insecure', '-q']);
    expect(insecure.status).toBe(0);
    expect(insecure.stderr).toMatch(/^vhdsync: warning: --insecure/);
    expect(server.requests.filter((r) => r.body.equals(src))).toHaveLength(2);
  });
});
