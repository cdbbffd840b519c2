/** Message codecs: round trips, and parsers refusing lengths and offsets that point outside the message. */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Command, HEADER_SIZE, parseHeader, serializeHeader } from '../../src/io/smb/header.js';
import { ALL_DIALECTS, Cipher, parseNegotiateResponse, serializeNegotiateRequest, SigningAlgorithm } from '../../src/io/smb/negotiate.js';
import { parseReadResponse } from '../../src/io/smb/read-write.js';
import { parseCreateResponse, serializeCreateRequest } from '../../src/io/smb/create.js';
import { parseQueryDirectoryResponse } from '../../src/io/smb/query-directory.js';
import { decryptMessage, encryptMessage, NonceSource } from '../../src/io/smb/transform.js';
import { computeSignature } from '../../src/io/smb/signing.js';
import { statusError, Status } from '../../src/io/smb/status.js';
import { NotFoundError } from '../../src/util/errors.js';

function reply(body: Buffer, status = 0): Buffer {
  const h = serializeHeader({ creditCharge: 1, command: Command.READ, credits: 1, flags: 1, messageId: 7, treeId: 1, sessionId: 5n });
  h.writeUInt32LE(status, 8);
  return Buffer.concat([h, body]);
}

describe('SMB2 header', () => {
  it('round-trips its fields', () => {
    fc.assert(
      fc.property(fc.nat(0xffff), fc.nat(0xffff), fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 0, max: 0xffffffff }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (charge, credits, mid, tree, sid) => {
        const h = parseHeader(serializeHeader({ creditCharge: charge, command: Command.WRITE, credits, flags: 0, messageId: mid, treeId: tree, sessionId: sid }));
        expect(h).toMatchObject({ creditCharge: charge, credits, messageId: mid, treeId: tree, sessionId: sid, command: Command.WRITE });
      }),
    );
  });
  it('refuses what is not SMB2', () => {
    expect(() => parseHeader(Buffer.alloc(64))).toThrow(/bad header/);
    expect(() => parseHeader(Buffer.from('\xfeSMB'))).toThrow(/bad header/);
  });
});

describe('NEGOTIATE', () => {
  it('puts the 3.1.1 contexts at an 8-aligned offset from the header', () => {
    const body = serializeNegotiateRequest({
      dialects: ALL_DIALECTS,
      securityMode: 1,
      capabilities: 0,
      clientGuid: Buffer.alloc(16),
      salt: Buffer.alloc(32),
      ciphers: [Cipher.AES128_GCM],
      signingAlgorithms: [SigningAlgorithm.AES_GMAC],
    });
    const off = body.readUInt32LE(28);
    expect(off % 8).toBe(0);
    expect(body.readUInt16LE(32)).toBe(3);
    expect(body.readUInt16LE(off - HEADER_SIZE)).toBe(1); // preauth context first
  });
  it('refuses a security buffer outside the response', () => {
    const body = Buffer.alloc(64);
    body.writeUInt16LE(65, 0);
    body.writeUInt16LE(0x0210, 4);
    body.writeUInt16LE(128, 56);
    body.writeUInt16LE(500, 58);
    expect(() => parseNegotiateResponse(reply(body))).toThrow(/security buffer outside/);
  });
});

describe('READ and QUERY_DIRECTORY responses', () => {
  it('refuse data lengths beyond the message or the request', () => {
    const body = Buffer.alloc(16 + 10);
    body.writeUInt16LE(17, 0);
    body.writeUInt8(80, 2);
    body.writeUInt32LE(10, 4);
    expect(parseReadResponse(reply(body), 10).length).toBe(10);
    expect(() => parseReadResponse(reply(body), 5)).toThrow(/outside/);
    body.writeUInt32LE(1000, 4);
    expect(() => parseReadResponse(reply(body), 2000)).toThrow(/outside/);
  });
  it('parse directory entries and refuse a name running past the buffer', () => {
    const name = Buffer.from('disk.vhdx', 'utf16le');
    const entry = Buffer.alloc(64 + name.length);
    entry.writeBigUInt64LE(123n, 40);
    entry.writeUInt32LE(name.length, 60);
    name.copy(entry, 64);
    const body = Buffer.alloc(8);
    body.writeUInt16LE(9, 0);
    body.writeUInt16LE(HEADER_SIZE + 8, 2);
    body.writeUInt32LE(entry.length, 4);
    expect(parseQueryDirectoryResponse(reply(Buffer.concat([body, entry])))).toEqual([{ name: 'disk.vhdx', size: 123, mtimeMs: expect.any(Number), isDirectory: false }]);
    entry.writeUInt32LE(1000, 60);
    expect(() => parseQueryDirectoryResponse(reply(Buffer.concat([body, entry])))).toThrow(/past the end/);
  });
});

describe('CREATE and its QFid context', () => {
  /** A CREATE response body (89) followed by `contexts`, each [name, data], laid out as a server does. */
  function createReply(contexts: Array<[string, Buffer]>): Buffer {
    const fixed = Buffer.alloc(88);
    fixed.writeUInt16LE(89, 0);
    const parts: Buffer[] = [];
    contexts.forEach(([name, data], i) => {
      const n = Buffer.from(name, 'latin1');
      const dataAt = (16 + n.length + 7) & ~7;
      const c = Buffer.alloc((dataAt + data.length + 7) & ~7);
      c.writeUInt32LE(i === contexts.length - 1 ? 0 : c.length, 0);
      c.writeUInt16LE(16, 4);
      c.writeUInt16LE(n.length, 6);
      c.writeUInt16LE(data.length ? dataAt : 0, 10);
      c.writeUInt32LE(data.length, 12);
      n.copy(c, 16);
      data.copy(c, dataAt);
      parts.push(c);
    });
    const ctx = Buffer.concat(parts);
    if (ctx.length) {
      fixed.writeUInt32LE(HEADER_SIZE + 88, 80);
      fixed.writeUInt32LE(ctx.length, 84);
    }
    return reply(Buffer.concat([fixed, ctx]));
  }

  it('asks for QFid in an aligned context after the name, and reads the identity among other contexts', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.boolean(), fc.boolean(), (name, id, before, after) => {
        const req = serializeCreateRequest({ name, access: 1, shareAccess: 7, disposition: 1, options: 0x40, queryDiskId: true });
        const at = req.readUInt32LE(48) - HEADER_SIZE;
        expect(at % 8).toBe(0);
        expect(at).toBeGreaterThanOrEqual(56 + Buffer.byteLength(name, 'utf16le'));
        expect(at + req.readUInt32LE(52)).toBe(req.length);
        expect(req.subarray(at + req.readUInt16LE(at + 4), at + req.readUInt16LE(at + 4) + req.readUInt16LE(at + 6)).toString('latin1')).toBe('QFid');
        expect(req.length % 8).toBe(0);
        const contexts: Array<[string, Buffer]> = [];
        if (before) contexts.push(['MxAc', Buffer.alloc(8, 1)]);
        contexts.push(['QFid', Buffer.from(id)]);
        if (after) contexts.push(['RqLs', Buffer.alloc(32, 2)]);
        expect(parseCreateResponse(createReply(contexts)).diskId).toBe(Buffer.from(id).subarray(0, 8).toString('hex'));
      }),
    );
    const plain = serializeCreateRequest({ name: 'a', access: 1, shareAccess: 7, disposition: 1, options: 0 });
    expect(plain.readUInt32LE(48)).toBe(0);
    expect(parseCreateResponse(createReply([])).diskId).toBeNull();
    expect(parseCreateResponse(createReply([['MxAc', Buffer.alloc(8)]])).diskId).toBeNull();
    // The identity is the DiskFileId alone: Samba's VolumeId is st_dev, which a reboot can change for the same file.
    const qfid = (fileId: number, volume: number) => Buffer.concat([Buffer.alloc(8, fileId), Buffer.alloc(8, volume), Buffer.alloc(16)]);
    const id = (data: Buffer) => parseCreateResponse(createReply([['QFid', data]])).diskId;
    expect(id(qfid(1, 2))).toBe(id(qfid(1, 3)));
    expect(id(qfid(1, 2))).not.toBe(id(qfid(4, 2)));
  });

  it('refuses contexts that point outside the message or overlap', () => {
    const good = createReply([['QFid', Buffer.alloc(32, 3)]]);
    const body = HEADER_SIZE;
    const bad = (edit: (m: Buffer) => void) => {
      const m = Buffer.from(good);
      edit(m);
      return () => parseCreateResponse(m);
    };
    expect(bad((m) => m.writeUInt32LE(m.length, body + 80))).toThrow(/malformed CREATE response/);
    expect(bad((m) => m.writeUInt32LE(1 << 20, body + 84))).toThrow(/malformed CREATE response/);
    expect(bad((m) => m.writeUInt32LE(HEADER_SIZE + 4, body + 80))).toThrow(/malformed CREATE response/);
    expect(bad((m) => m.writeUInt32LE(1000, body + 88 + 12))).toThrow(/malformed CREATE response/);
    expect(bad((m) => m.writeUInt16LE(200, body + 88 + 4))).toThrow(/malformed CREATE response/);
    expect(bad((m) => m.writeUInt32LE(9, body + 88))).toThrow(/malformed CREATE response/);
  });
});

describe('encryption transform', () => {
  it.each([
    ['AES-128-GCM', Cipher.AES128_GCM],
    ['AES-128-CCM', Cipher.AES128_CCM],
  ])('%s round-trips and detects tampering', (_name, cipher) => {
    const key = randomBytes(16);
    const msg = [randomBytes(64), randomBytes(1000)];
    const nonces = new NonceSource();
    const frame = Buffer.concat(encryptMessage(cipher, key, 42n, nonces.next(), msg));
    expect(decryptMessage(cipher, key, 42n, frame)).toEqual(Buffer.concat(msg));
    frame[frame.length - 1] ^= 1;
    expect(() => decryptMessage(cipher, key, 42n, frame)).toThrow(/integrity check/);
    expect(() => decryptMessage(cipher, key, 43n, frame)).toThrow(/another session/);
  });
  it('never repeats a nonce', () => {
    const n = new NonceSource();
    const seen = new Set(Array.from({ length: 1000 }, () => n.next().toString('hex')));
    expect(seen.size).toBe(1000);
  });
});

describe('signatures', () => {
  it('GMAC depends on the message id and the sender role; all algorithms on every byte', () => {
    const key = randomBytes(16);
    const msg = randomBytes(200);
    const g = computeSignature(SigningAlgorithm.AES_GMAC, key, [msg], 5, false);
    expect(computeSignature(SigningAlgorithm.AES_GMAC, key, [msg], 6, false)).not.toEqual(g);
    expect(computeSignature(SigningAlgorithm.AES_GMAC, key, [msg], 5, true)).not.toEqual(g);
    for (const alg of [SigningAlgorithm.HMAC_SHA256, SigningAlgorithm.AES_CMAC, SigningAlgorithm.AES_GMAC]) {
      const a = computeSignature(alg, key, [msg.subarray(0, 50), msg.subarray(50)], 5, false);
      expect(a).toEqual(computeSignature(alg, key, [msg], 5, false));
      const other = Buffer.from(msg);
      other[199] ^= 1;
      expect(computeSignature(alg, key, [other], 5, false)).not.toEqual(a);
    }
  });
});

describe('status translation', () => {
  it('maps the statuses users meet to one clear line each', () => {
    expect(statusError(Status.OBJECT_NAME_NOT_FOUND, 'f')).toBeInstanceOf(NotFoundError);
    expect(statusError(Status.BAD_NETWORK_NAME, '//h/s').describe()).toBe('//h/s: no such share');
    expect(statusError(Status.LOGON_FAILURE, 'u@h').describe()).toBe('u@h: logon failure (wrong user name or password)');
    expect(statusError(Status.ACCESS_DENIED, 'f').describe()).toBe('f: permission denied');
    expect(statusError(0xc0001234, 'f').describe()).toBe('f: SMB server answered with status 0xc0001234');
  });
});
