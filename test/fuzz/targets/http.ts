/**
 * `http-request`: what `serve` reads from a client before touching any disk: request heads (request line, headers,
 * cookies, query), body framing (Content-Length, HTTP chunked decoded by ServerConnection), XAPI's parameters, Range,
 * and the check that a `vdi=` stays inside the served folder. Seeds are requests as curl, vhd-tool, Xen Orchestra
 * and requests send them; inputs overwrite and insert bytes, then arrive cut into random chunks.
 */
import fc from 'fast-check';
import { PassThrough } from 'node:stream';
import type { Socket } from 'node:net';
import { ServerConnection } from '../../../src/serve/connection.js';
import { isPlainName } from '../../../src/serve/catalog.js';
import { bodyFraming, param, parseRange, routeOf } from '../../../src/serve/request.js';
import { Violation, withAllocationCap } from '../guards.js';
import { BASE_ALLOCATION_CAP } from '../image-target.js';
import { defineTarget, inputText } from '../target.js';

const SEEDS = [
  'PUT /import_raw_vdi?vdi=d.vhd&format=raw HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YTpi\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello',
  'PUT /import_raw_vdi/?vdi=x&format=vhd&session_id=OpaqueRef:1&task_id=t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nCookie: chunked=true; vdi=%2E%2E%2Fa\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n',
  'PUT /import_raw_vdi?vdi=d HTTP/1.0\r\nCookie: chunked=true\r\nConnection: close\r\n\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00abcd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00',
  'GET /export_raw_vdi?vdi=..%2Fetc%2Fpasswd&base=a.vhd&format=VHD HTTP/1.1\r\nRange: bytes=100-199\r\nCookie: session_id="tok"\r\n\r\n',
  'GET http://h:80/task/abc?x=1&x=2 HTTP/1.1\r\nRange: bytes=-512\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'));

interface HttpInput {
  seed: number;
  /** Byte overwrites: position (modulo the length) and value. */
  sets: { at: number; value: number }[];
  /** Insertions of short strings made of HTTP's delimiters and digits. */
  inserts: { at: number; text: string }[];
  cuts: number[];
}

const ALPHABET = ['\r\n', ':', ';', '=', '&', '%', '%2F', '..', '/', '\\', '\x00', ' ', '\t', '"', '0', '9', 'f', 'ffffffffffff', '-', ',', 'chunked', '99999999999999999'];

function bytesOf(input: HttpInput): Buffer {
  let b = Buffer.from(SEEDS[input.seed % SEEDS.length]);
  for (const s of input.sets) if (b.length) b[s.at % b.length] = s.value;
  for (const ins of input.inserts) {
    const at = ins.at % (b.length + 1);
    b = Buffer.concat([b.subarray(0, at), Buffer.from(ins.text, 'latin1'), b.subarray(at)]);
  }
  return b;
}

/** Feeds `bytes` in chunks to a connection reader, then reads the head and the body as `serve` would. */
async function runRequest(bytes: Buffer, cuts: number[]): Promise<void> {
  await withAllocationCap(BASE_ALLOCATION_CAP + 4 * bytes.length, async () => {
    const pipe = new PassThrough();
    const conn = new ServerConnection(pipe as unknown as Socket, 'fuzz');
    let at = 0;
    for (const c of cuts) {
      if (at >= bytes.length) break;
      pipe.write(bytes.subarray(at, at + c));
      at += c;
    }
    pipe.end(bytes.subarray(at));
    const req = await conn.readHead(5000);
    if (!req) return;
    if (!req.path.startsWith('/')) throw new Violation('crash', `parsed path does not start with /: ${JSON.stringify(req.path.slice(0, 80))}`);
    routeOf(req.path);
    for (const name of ['vdi', 'base']) {
      const v = param(req, name);
      if (v !== undefined && isPlainName(v) && (/[/\\\x00]/.test(v) || v.startsWith('.'))) throw new Violation('crash', `${name}=${JSON.stringify(v)} passed as a plain name`);
    }
    for (const name of ['session_id', 'task_id', 'format', 'chunked']) param(req, name);
    const range = parseRange(req.headers.get('range'), 1 << 20);
    if (range && range !== 'unsatisfiable' && !(range.start >= 0 && range.end < 1 << 20 && range.start <= range.end)) throw new Violation('crash', `range out of bounds: ${JSON.stringify(range)}`);
    const framing = bodyFraming(req);
    let got = 0;
    for await (const b of conn.body(framing)) {
      got += b.length;
      if (got > bytes.length) throw new Violation('crash', `body yielded ${got} bytes from a ${bytes.length}-byte request`);
    }
  });
}

export const httpRequest = defineTarget<null, HttpInput>({
  name: 'http-request',
  about: "serve's request reading: heads, cookies, query, Content-Length / HTTP chunked bodies cut in random chunks, XAPI parameters, Range, vdi= confinement",
  weight: 1,
  prepare: async () => null,
  arbitrary: () =>
    fc.record({
      seed: fc.nat(),
      sets: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 6 }),
      inserts: fc.array(fc.record({ at: fc.nat(), text: fc.constantFrom(...ALPHABET) }), { maxLength: 6 }),
      cuts: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 10 }),
    }),
  run: (_, input) => runRequest(bytesOf(input), input.cuts),
  save: (_, input) => Buffer.concat([Buffer.from(JSON.stringify(input.cuts) + '\n'), bytesOf(input)]),
  async replay(file) {
    const nl = file.indexOf(0x0a);
    await runRequest(file.subarray(nl + 1), JSON.parse(file.subarray(0, nl).toString()) as number[]);
  },
  describe: (_, input) => inputText(input),
});
