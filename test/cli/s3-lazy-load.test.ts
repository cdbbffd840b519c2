/**
 * bin/vhdsync.js runs the bundle (dist/bundle/, scripts/bundle.js), not tsc's module tree, and the bundle keeps the
 * CLI's lazy loading: the S3 client (the AWS SDK, a few hundred modules) loads only when an s3:// location is
 * opened, so commands on files never pay for it (issue 14's start-up goal). A control run that opens an s3://
 * repository (on a local server that refuses every request) shows the detector sees the SDK; backup's does it
 * without loading yargs.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { BIN } from '../helpers/cli.js';
import { loadedModules } from '../helpers/loaded-modules.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('S3 client loading', () => {
  const { dir, cleanup } = makeTempDir('vhdsync-lazy-');
  afterAll(cleanup);
  const bundle = path.resolve('dist/bundle') + path.sep;
  const sdk = (sources: string[]) => sources.filter((s) => s.startsWith('node_modules/@aws-sdk/'));

  it('vhdsync --version and a command on a file run the bundle and load none of the SDK', async () => {
    const version = await loadedModules(dir, ['--version']);
    expect(version.status).toBe(0);
    expect(version.esm).toContain(path.join(bundle, 'main.js'));
    // The bin, then bundle chunks only: no module of tsc's dist/ tree, no package file outside the bundle.
    expect(version.esm.filter((f) => f !== BIN && !f.startsWith(bundle))).toEqual([]);
    expect(sdk(version.sources)).toEqual([]);
    const img = path.join(dir, 'disk.raw');
    writeFileSync(img, Buffer.alloc(1 << 20));
    const info = await loadedModules(dir, ['info', img]);
    expect(info.status).toBe(0);
    expect(info.esm.filter((f) => f !== BIN && !f.startsWith(bundle))).toEqual([]);
    expect(info.sources.some((s) => s.startsWith('node_modules/yargs/'))).toBe(true);
    expect(sdk(info.sources)).toEqual([]);
  });

  it('opening an s3:// repository loads it (the detector works)', async () => {
    const server = createServer((req, res) => {
      res.writeHead(403, { 'content-type': 'application/xml' }).end('<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>no</Message></Error>');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const env = { AWS_ENDPOINT_URL: `http://127.0.0.1:${port}`, AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b', AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true' };
      const list = await loadedModules(dir, ['list', '--repo', 's3://bucket/x'], env);
      expect(list.status).toBe(1);
      expect(sdk(list.sources).length).toBeGreaterThan(10);
      // backup's plain command lines skip yargs (fast-args.ts): its time to the first request is issue 15's.
      const img = path.join(dir, 'src.raw');
      writeFileSync(img, Buffer.alloc(1 << 20));
      const backup = await loadedModules(dir, ['backup', img, '--repo', 's3://bucket/x'], env);
      expect(backup.stderr).toMatch(/AccessDenied/);
      expect(sdk(backup.sources).length).toBeGreaterThan(10);
      expect(backup.sources.filter((s) => s.startsWith('node_modules/yargs/'))).toEqual([]);
    } finally {
      server.close();
    }
  });
});
