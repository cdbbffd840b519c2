/** SMB2 NEGOTIATE request and response ([MS-SMB2] 2.2.3, 2.2.4) with the 3.1.1 negotiate contexts. */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE } from './header.js';

export const Dialect = { SMB202: 0x0202, SMB210: 0x0210, SMB300: 0x0300, SMB302: 0x0302, SMB311: 0x0311 } as const;
export const ALL_DIALECTS = [Dialect.SMB202, Dialect.SMB210, Dialect.SMB300, Dialect.SMB302, Dialect.SMB311];

export const SecurityMode = { SIGNING_ENABLED: 1, SIGNING_REQUIRED: 2 } as const;
export const Capability = { DFS: 0x1, LEASING: 0x2, LARGE_MTU: 0x4, ENCRYPTION: 0x40 } as const;
export const Cipher = { AES128_CCM: 1, AES128_GCM: 2 } as const;
export const SigningAlgorithm = { HMAC_SHA256: 0, AES_CMAC: 1, AES_GMAC: 2 } as const;

const CTX_PREAUTH = 1;
const CTX_ENCRYPTION = 2;
const CTX_SIGNING = 8;
const HASH_SHA512 = 1;

/** What the client offers. */
export interface NegotiateRequest {
  dialects: number[];
  securityMode: number;
  capabilities: number;
  clientGuid: Buffer;
  /** Preauth-integrity salt (32 random bytes), used with 3.1.1. */
  salt: Buffer;
  ciphers: number[];
  signingAlgorithms: number[];
}

// Arithmetic, not `& ~7`: a 32-bit offset from a server past 2^31 must stay positive for the bounds checks.
const align8 = (n: number) => Math.ceil(n / 8) * 8;

function context(type: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8 + data.length);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(data.length, 2);
  data.copy(b, 8);
  return b;
}

function u16list(values: number[], prefix: number[] = []): Buffer {
  const all = [...prefix, ...values];
  const b = Buffer.alloc(all.length * 2);
  all.forEach((v, i) => b.writeUInt16LE(v, i * 2));
  return b;
}

/** The NEGOTIATE request body (offsets count from the start of the header). */
export function serializeNegotiateRequest(r: NegotiateRequest): Buffer {
  const fixed = Buffer.alloc(36);
  fixed.writeUInt16LE(36, 0);
  fixed.writeUInt16LE(r.dialects.length, 2);
  fixed.writeUInt16LE(r.securityMode, 4);
  fixed.writeUInt32LE(r.capabilities, 8);
  r.clientGuid.copy(fixed, 12);
  const dialects = u16list(r.dialects);
  if (!r.dialects.includes(Dialect.SMB311)) return Buffer.concat([fixed, dialects]);

  const preauth = Buffer.concat([u16list([HASH_SHA512], [1, r.salt.length]), r.salt]);
  const contexts = [
    context(CTX_PREAUTH, preauth),
    context(CTX_ENCRYPTION, u16list(r.ciphers, [r.ciphers.length])),
    context(CTX_SIGNING, u16list(r.signingAlgorithms, [r.signingAlgorithms.length])),
  ];
  const ctxOffset = align8(HEADER_SIZE + 36 + dialects.length);
  fixed.writeUInt32LE(ctxOffset, 28);
  fixed.writeUInt16LE(contexts.length, 32);
  const parts: Buffer[] = [fixed, dialects, Buffer.alloc(ctxOffset - HEADER_SIZE - 36 - dialects.length)];
  contexts.forEach((c, i) => {
    parts.push(c);
    if (i < contexts.length - 1) parts.push(Buffer.alloc(align8(c.length) - c.length));
  });
  return Buffer.concat(parts);
}

/** What the server chose. */
export interface NegotiateResponse {
  securityMode: number;
  dialect: number;
  capabilities: number;
  maxTransactSize: number;
  maxReadSize: number;
  maxWriteSize: number;
  securityBuffer: Buffer;
  /** 3.1.1 only: the chosen cipher (0 when none) and signing algorithm (null when the server sent none). */
  cipher: number;
  signingAlgorithm: number | null;
}

function slice(msg: Buffer, off: number, len: number, what: string): Buffer {
  if (off + len > msg.length) throw new IoError(`malformed NEGOTIATE response: ${what} outside the message`);
  return msg.subarray(off, off + len);
}

/** Parses a NEGOTIATE response message (header included), bounding every offset by its length. */
export function parseNegotiateResponse(msg: Buffer): NegotiateResponse {
  const body = slice(msg, HEADER_SIZE, 64, 'body');
  if (body.readUInt16LE(0) !== 65) throw new IoError('malformed NEGOTIATE response');
  const res: NegotiateResponse = {
    securityMode: body.readUInt16LE(2),
    dialect: body.readUInt16LE(4),
    capabilities: body.readUInt32LE(24),
    maxTransactSize: body.readUInt32LE(28),
    maxReadSize: body.readUInt32LE(32),
    maxWriteSize: body.readUInt32LE(36),
    securityBuffer: Buffer.from(slice(msg, body.readUInt16LE(56), body.readUInt16LE(58), 'security buffer')),
    cipher: 0,
    signingAlgorithm: null,
  };
  if (res.dialect !== Dialect.SMB311) return res;

  let off = body.readUInt32LE(60);
  const count = body.readUInt16LE(6);
  let sawPreauth = false;
  for (let i = 0; i < count; i++) {
    off = align8(off);
    const head = slice(msg, off, 8, 'negotiate context');
    const type = head.readUInt16LE(0);
    const data = slice(msg, off + 8, head.readUInt16LE(2), 'negotiate context');
    if (type === CTX_PREAUTH) {
      if (data.length < 6 || data.readUInt16LE(0) !== 1 || data.readUInt16LE(4) !== HASH_SHA512) {
        throw new IoError('server chose an unknown preauth integrity hash');
      }
      sawPreauth = true;
    } else if (type === CTX_ENCRYPTION && data.length >= 4) {
      res.cipher = data.readUInt16LE(2);
    } else if (type === CTX_SIGNING && data.length >= 4) {
      res.signingAlgorithm = data.readUInt16LE(2);
    }
    off += 8 + data.length;
  }
  if (!sawPreauth) throw new IoError('SMB 3.1.1 server sent no preauth integrity context');
  return res;
}
