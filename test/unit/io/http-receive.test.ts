/**
 * The HTTP client's receive path (socket-reader.ts: reads into a ring of reused buffers, paused past HIGH_WATER):
 * bodies sent by node:http in odd-sized writes, plain and chunked, read by a consumer that keeps each piece for a
 * while (as ForwardReader does) and sometimes stalls, arrive byte for byte.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { httpGet } from '../../../src/io/http.js';

const BODY = randomBytes(3 << 20);

describe('HTTP client receive path', () => {
  let server: http.Server;
  let base = '';
  beforeAll(async () => {
    server = http.createServer(async (req, res) => {
      const u = new URL(req.url!, 'http://x');
      const piece = Number(u.searchParams.get('piece'));
      const chunked = u.searchParams.get('chunked') === '1';
      res.writeHead(200, chunked ? {} : { 'Content-Length': BODY.length });
      for (let o = 0; o < BODY.length; o += piece) {
        // With Transfer-Encoding: chunked, each write is one chunk (a size line, the data, CRLF).
        if (!res.write(BODY.subarray(o, Math.min(BODY.length, o + piece)))) await new Promise((r) => res.once('drain', r));
      }
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('delivers every byte in order whatever the write sizes, framing and consumer pace', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1000, max: 3 << 20 }), fc.boolean(), fc.array(fc.nat(3), { minLength: 1, maxLength: 20 }), async (piece, chunked, pace) => {
        const body = await httpGet(`${base}?piece=${piece}&chunked=${chunked ? 1 : 0}`);
        const kept: Buffer[] = [];
        let held: Buffer | null = null;
        let k = 0;
        for await (const b of body.bytes) {
          // Keep a view of the previous piece until the next one arrives, and copy it only then.
          if (held) kept.push(Buffer.from(held));
          held = b;
          const p = pace[k++ % pace.length];
          if (p === 1) await new Promise((r) => setImmediate(r));
          else if (p === 2) await new Promise((r) => setTimeout(r, 2));
        }
        if (held) kept.push(Buffer.from(held));
        expect(Buffer.concat(kept).equals(BODY)).toBe(true);
      }),
      { numRuns: 15 },
    );
  });
});
