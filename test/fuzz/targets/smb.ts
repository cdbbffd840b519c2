/**
 * SMB targets: the client's parsers of server replies. Seeds are well-formed replies built here field by field
 * (NEGOTIATE with 3.1.1 contexts, SESSION_SETUP carrying SPNEGO and an NTLM challenge with AV pairs, TREE_CONNECT,
 * CREATE, READ, WRITE, QUERY_INFO, QUERY_DIRECTORY, an encrypted frame, a compound chain), mutated through the
 * same field layouts as the images, then fed to the parsers and, framed, through the FrameReader in random chunks.
 */
import fc from 'fast-check';
import { parseHeader, HEADER_SIZE, Command } from '../../../src/io/smb/header.js';
import { parseNegotiateResponse } from '../../../src/io/smb/negotiate.js';
import { parseSessionSetupResponse } from '../../../src/io/smb/session-setup.js';
import { parseNegTokenResp } from '../../../src/io/smb/spnego.js';
import { tlv } from '../../../src/io/smb/der.js';
import { authenticateMessage, parseChallenge, negotiateMessage } from '../../../src/io/smb/ntlm-messages.js';
import { parseTreeConnectResponse } from '../../../src/io/smb/tree-connect.js';
import { parseCreateResponse } from '../../../src/io/smb/create.js';
import { parseReadResponse, parseWriteResponse } from '../../../src/io/smb/read-write.js';
import { parseQueryInfoResponse, parseStandardInfo } from '../../../src/io/smb/info.js';
import { parseQueryDirectoryResponse } from '../../../src/io/smb/query-directory.js';
import { decryptMessage, encryptMessage, isTransformed } from '../../../src/io/smb/transform.js';
import { FrameReader, PLACE_PREFIX } from '../../../src/io/smb/frame-reader.js';
import { statusError } from '../../../src/io/smb/status.js';
import { PagedImage } from '../memory-store.js';
import { applyMutations, fieldsAt, mutationsArb, type Layout, type Mutation } from '../mutate.js';
import { Violation, withAllocationCap } from '../guards.js';
import { defineTarget, inputText } from '../target.js';

/** A well-formed reply and the layout of its fields (offsets from the message start). */
interface Reply {
  name: string;
  command: number;
  bytes: Buffer;
  layout: Layout;
}

const HEADER: Array<[string, number, number]> = [
  ['protocol', 0, 4], ['structureSize', 4, 2], ['creditCharge', 6, 2], ['status', 8, 4], ['command', 12, 2], ['credits', 14, 2], ['flags', 16, 4],
  ['nextCommand', 20, 4], ['messageId', 24, 8], ['treeOrAsync', 32, 8], ['sessionId', 40, 8],
];

function header(command: number, messageId: number): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(0x424d53fe, 0);
  b.writeUInt16LE(HEADER_SIZE, 4);
  b.writeUInt16LE(command, 12);
  b.writeUInt16LE(64, 14);
  b.writeUInt32LE(1, 16);
  b.writeBigUInt64LE(BigInt(messageId), 24);
  b.writeBigUInt64LE(0x1234n, 40);
  return b;
}

/** Builds a reply from its body and the body's fields [name, offset in body, size]. */
function reply(name: string, command: number, body: Buffer, fields: Array<[string, number, number]>): Reply {
  const bytes = Buffer.concat([header(command, 7), body]);
  return {
    name,
    command,
    bytes,
    layout: {
      fields: [...fieldsAt('header', 0, true, HEADER), ...fieldsAt(name, HEADER_SIZE, true, fields)],
      checksums: [],
      regions: [{ name: 'header', at: 0, length: HEADER_SIZE }, { name, at: HEADER_SIZE, length: body.length }],
    },
  };
}

function avPairs(): Buffer {
  const pair = (id: number, v: Buffer) => Buffer.concat([Buffer.from([id, 0, v.length & 0xff, v.length >> 8]), v]);
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64LE(133000000000000000n);
  return Buffer.concat([pair(2, Buffer.from('DOMAIN', 'utf16le')), pair(1, Buffer.from('SERVER', 'utf16le')), pair(7, ts), pair(0, Buffer.alloc(0))]);
}

function challenge(): Buffer {
  const info = avPairs();
  const name = Buffer.from('DOMAIN', 'utf16le');
  const b = Buffer.alloc(56);
  b.write('NTLMSSP\0', 0, 'latin1');
  b.writeUInt32LE(2, 8);
  b.writeUInt16LE(name.length, 12);
  b.writeUInt16LE(name.length, 14);
  b.writeUInt32LE(56, 16);
  b.writeUInt32LE(0xe2898215, 20);
  b.write('01234567', 24, 'latin1');
  b.writeUInt16LE(info.length, 40);
  b.writeUInt16LE(info.length, 42);
  b.writeUInt32LE(56 + name.length, 44);
  return Buffer.concat([b, name, info]);
}

function negotiate311(): Reply {
  const ctx = (type: number, data: Buffer) => {
    const c = Buffer.alloc(8 + data.length + ((8 - (data.length % 8)) % 8));
    c.writeUInt16LE(type, 0);
    c.writeUInt16LE(data.length, 2);
    data.copy(c, 8);
    return c;
  };
  const preauth = Buffer.alloc(38);
  preauth.writeUInt16LE(1, 0);
  preauth.writeUInt16LE(32, 2);
  preauth.writeUInt16LE(1, 4);
  const contexts = Buffer.concat([ctx(1, preauth), ctx(2, Buffer.from([1, 0, 2, 0])), ctx(8, Buffer.from([1, 0, 1, 0]))]);
  const token = tlv(0x60, tlv(0x06, Buffer.from([0x2b, 6, 1, 5, 5, 2])));
  const body = Buffer.alloc(64);
  body.writeUInt16LE(65, 0);
  body.writeUInt16LE(1, 2);
  body.writeUInt16LE(0x0311, 4);
  body.writeUInt16LE(3, 6);
  body.writeUInt32LE(0x47, 24);
  body.writeUInt32LE(1 << 20, 28);
  body.writeUInt32LE(1 << 20, 32);
  body.writeUInt32LE(1 << 20, 36);
  body.writeUInt16LE(HEADER_SIZE + 64, 56);
  body.writeUInt16LE(token.length, 58);
  const pad = Buffer.alloc((8 - ((HEADER_SIZE + 64 + token.length) % 8)) % 8);
  body.writeUInt32LE(HEADER_SIZE + 64 + token.length + pad.length, 60);
  const r = reply('negotiate', Command.NEGOTIATE, Buffer.concat([body, token, pad, contexts]), [
    ['structureSize', 0, 2], ['securityMode', 2, 2], ['dialect', 4, 2], ['contextCount', 6, 2], ['capabilities', 24, 4], ['maxTransact', 28, 4],
    ['maxRead', 32, 4], ['securityBufferOffset', 56, 2], ['securityBufferLength', 58, 2], ['contextOffset', 60, 4],
  ]);
  const ctxAt = HEADER_SIZE + 64 + token.length + pad.length;
  for (let i = 0, at = ctxAt; i < 3; i++) {
    const len = r.bytes.readUInt16LE(at + 2);
    r.layout.fields.push(...fieldsAt(`context[${i}]`, at, true, [['type', 0, 2], ['length', 2, 2], ['first', 8, 2], ['second', 10, 2], ['third', 12, 2]]));
    at += 8 + len + ((8 - (len % 8)) % 8);
  }
  return r;
}

function sessionSetup(): Reply {
  const ntlm = challenge();
  const token = tlv(0xa1, tlv(0x30, tlv(0xa0, tlv(0x0a, Buffer.from([1]))), tlv(0xa1, tlv(0x06, Buffer.from([0x2b, 6, 1, 4, 1, 0x82, 0x37, 2, 2, 10]))), tlv(0xa2, tlv(0x04, ntlm))));
  const body = Buffer.alloc(8);
  body.writeUInt16LE(9, 0);
  body.writeUInt16LE(HEADER_SIZE + 8, 4);
  body.writeUInt16LE(token.length, 6);
  const r = reply('sessionSetup', Command.SESSION_SETUP, Buffer.concat([body, token]), [['structureSize', 0, 2], ['flags', 2, 2], ['tokenOffset', 4, 2], ['tokenLength', 6, 2]]);
  const ntlmAt = HEADER_SIZE + 8 + token.indexOf(ntlm);
  r.layout.fields.push(
    ...fieldsAt('ntlm', ntlmAt, true, [['type', 8, 4], ['nameLength', 12, 2], ['nameOffset', 16, 4], ['flags', 20, 4], ['infoLength', 40, 2], ['infoOffset', 44, 4]]),
    ...[0, 1, 2, 3, 4, 5].map((k) => ({ name: `spnego.byte${k}`, at: HEADER_SIZE + 8 + k, size: 1, le: true })),
  );
  r.layout.regions.push({ name: 'ntlm', at: ntlmAt, length: ntlm.length });
  // AV pair headers: ids and lengths.
  for (let p = 0, at = ntlmAt + ntlm.length - avPairs().length; p < 4; p++) {
    const len = r.bytes.readUInt16LE(at + 2);
    r.layout.fields.push({ name: `av[${p}].id`, at, size: 2, le: true }, { name: `av[${p}].length`, at: at + 2, size: 2, le: true });
    at += 4 + len;
  }
  return r;
}

function withData(name: string, command: number, structure: number, data: Buffer, offAt: number, offSize: number, lenAt: number): Reply {
  const body = Buffer.alloc(structure & ~1);
  body.writeUInt16LE(structure, 0);
  if (offSize === 1) body.writeUInt8(HEADER_SIZE + body.length, offAt);
  else body.writeUInt16LE(HEADER_SIZE + body.length, offAt);
  body.writeUInt32LE(data.length, lenAt);
  return reply(name, command, Buffer.concat([body, data]), [['structureSize', 0, 2], ['dataOffset', offAt, offSize], ['dataLength', lenAt, 4]]);
}

function directory(): Reply {
  const entry = (name: string, last: boolean) => {
    const n = Buffer.from(name, 'utf16le');
    const e = Buffer.alloc((64 + n.length + 7) & ~7);
    e.writeUInt32LE(last ? 0 : e.length, 0);
    e.writeBigUInt64LE(133000000000000000n, 24);
    e.writeBigUInt64LE(12345n, 40);
    e.writeUInt32LE(name === 'dir' ? 0x10 : 0x20, 56);
    e.writeUInt32LE(n.length, 60);
    n.copy(e, 64);
    return e;
  };
  const data = Buffer.concat([entry('a.vhdx', false), entry('dir', false), entry('b.bin', true)]);
  const r = withData('queryDirectory', Command.QUERY_DIRECTORY, 9, data, 2, 2, 4);
  for (let i = 0, at = HEADER_SIZE + 8; i < 3; i++) {
    r.layout.fields.push(...fieldsAt(`entry[${i}]`, at, true, [['next', 0, 4], ['size', 40, 8], ['attributes', 56, 4], ['nameLength', 60, 4]]));
    at += r.bytes.readUInt32LE(at) || 0;
  }
  return r;
}

const KEY = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

function encrypted(): Reply {
  const inner = withData('read', Command.READ, 17, Buffer.from('hello, encrypted'), 2, 1, 4).bytes;
  const parts = encryptMessage(2, KEY, 0x1234n, Buffer.alloc(16, 3), [inner]);
  const bytes = Buffer.concat(parts);
  return {
    name: 'encrypted',
    command: -1,
    bytes,
    layout: {
      fields: fieldsAt('transform', 0, true, [['protocol', 0, 4], ['signature', 4, 16], ['nonce', 20, 16], ['size', 36, 4], ['flags', 42, 2], ['sessionId', 44, 8]]),
      checksums: [],
      regions: [{ name: 'transform', at: 0, length: 52 }, { name: 'ciphertext', at: 52, length: bytes.length - 52 }],
    },
  };
}

function compound(): Reply {
  const a = withData('write', Command.WRITE, 17, Buffer.alloc(0), 2, 1, 4).bytes;
  const b = reply('treeConnect', Command.TREE_CONNECT, Buffer.alloc(16), []).bytes;
  b.writeUInt16LE(16, HEADER_SIZE);
  const first = Buffer.concat([a, Buffer.alloc((8 - (a.length % 8)) % 8)]);
  first.writeUInt32LE(first.length, 20);
  const bytes = Buffer.concat([first, b]);
  return {
    name: 'compound',
    command: -2,
    bytes,
    layout: { fields: [...fieldsAt('first', 0, true, HEADER), ...fieldsAt('second', first.length, true, HEADER)], checksums: [], regions: [{ name: 'chain', at: 0, length: bytes.length }] },
  };
}

function replies(): Reply[] {
  const tree = Buffer.alloc(16);
  tree.writeUInt16LE(16, 0);
  tree.writeUInt8(1, 2);
  const create = Buffer.alloc(88);
  create.writeUInt16LE(89, 0);
  create.writeBigUInt64LE(1n << 40n, 48);
  const info = Buffer.alloc(24);
  info.writeBigUInt64LE(5n << 30n, 8);
  return [
    negotiate311(),
    sessionSetup(),
    reply('treeConnect', Command.TREE_CONNECT, tree, [['structureSize', 0, 2], ['shareType', 2, 1], ['shareFlags', 4, 4]]),
    reply('create', Command.CREATE, create, [['structureSize', 0, 2], ['createAction', 4, 4], ['mtime', 24, 8], ['endOfFile', 48, 8], ['attributes', 56, 4]]),
    withData('read', Command.READ, 17, Buffer.alloc(4096, 0x5a), 2, 1, 4),
    withData('write', Command.WRITE, 17, Buffer.alloc(0), 2, 1, 4),
    withData('queryInfo', Command.QUERY_INFO, 9, info, 2, 2, 4),
    directory(),
    encrypted(),
    compound(),
  ];
}

/** Parses one reply the way the client does for its command (header first, then body, then nested tokens). */
function parseReply(msg: Buffer): void {
  if (isTransformed(msg)) {
    parseReply(decryptMessage(2, KEY, 0x1234n, msg));
    return;
  }
  for (let off = 0; off < msg.length; ) {
    const rest = msg.subarray(off);
    const h = parseHeader(rest);
    if (h.status !== 0) statusError(h.status, 'fuzz').describe();
    const m = h.nextCommand ? rest.subarray(0, Math.min(h.nextCommand, rest.length)) : rest;
    if (h.nextCommand !== 0 && h.nextCommand < HEADER_SIZE) return;
    off += h.nextCommand || rest.length;
    switch (h.command) {
      case Command.NEGOTIATE:
        parseNegotiateResponse(m);
        break;
      case Command.SESSION_SETUP: {
        const tok = parseNegTokenResp(parseSessionSetupResponse(m).token);
        if (tok.responseToken) authenticateMessage({ user: 'u', password: 'p', domain: 'd' }, parseChallenge(tok.responseToken), {}, negotiateMessage());
        break;
      }
      case Command.TREE_CONNECT:
        parseTreeConnectResponse(m);
        break;
      case Command.CREATE:
        parseCreateResponse(m);
        break;
      case Command.READ:
        parseReadResponse(m, 1 << 16);
        break;
      case Command.WRITE:
        parseWriteResponse(m);
        break;
      case Command.QUERY_INFO:
        parseStandardInfo(parseQueryInfoResponse(m));
        break;
      case Command.QUERY_DIRECTORY: {
        // Each entry takes at least its 64 fixed bytes: more entries than that means they overlap, and a 16 MiB
        // reply could then expand into millions of objects.
        const n = parseQueryDirectoryResponse(m).length;
        if (n * 64 > m.length) throw new Violation('memory', `QUERY_DIRECTORY reply of ${m.length} bytes parsed into ${n} entries`);
        break;
      }
    }
  }
}

interface MessageInput {
  reply: number;
  muts: Mutation[];
}

function mutated(all: Reply[], input: MessageInput): Buffer {
  const r = all[input.reply % all.length];
  const img = PagedImage.from(r.bytes);
  applyMutations(img, r.layout, input.muts);
  // Messages arrive in frames of at most 16 MiB; an "extended" message is capped the same way.
  return img.slice(0, Math.min(img.size, 0xffffff));
}

const MESSAGE_CAP = 64 << 20;

export const smbMessages = defineTarget<Reply[], MessageInput>({
  name: 'smb-messages',
  about: 'SMB2 reply parsers: header, NEGOTIATE (3.1.1 contexts), SESSION_SETUP, SPNEGO, NTLM challenge and AV pairs, TREE_CONNECT, CREATE, READ, WRITE, QUERY_INFO, QUERY_DIRECTORY, compound chains, encrypted frames',
  weight: 2,
  async prepare() {
    return replies();
  },
  arbitrary: () => fc.record({ reply: fc.nat(), muts: mutationsArb() }),
  async run(all, input) {
    const msg = mutated(all, input);
    await withAllocationCap(MESSAGE_CAP, async () => parseReply(msg));
  },
  save: (all, input) => mutated(all, input),
  async replay(file) {
    await withAllocationCap(MESSAGE_CAP, async () => parseReply(file));
  },
  describe: (all, input) => inputText({ reply: all[input.reply % all.length].name, muts: input.muts }),
});

interface FrameInput {
  replies: number[];
  muts: Mutation[];
  cuts: number[];
  place: number[];
}

/** A stream of framed replies (4-byte direct-TCP header each), mutated as a whole. */
function stream(all: Reply[], input: FrameInput): Buffer {
  const framed = input.replies.map((i) => {
    const m = all[i % all.length].bytes;
    const h = Buffer.alloc(4);
    h.writeUInt32BE(m.length);
    return Buffer.concat([h, m]);
  });
  const bytes = Buffer.concat(framed);
  const img = PagedImage.from(bytes);
  const fields = framed.map((f, k) => ({ name: `frame[${k}].length`, at: framed.slice(0, k).reduce((n, x) => n + x.length, 0), size: 4, le: false }));
  applyMutations(img, { fields, checksums: [], regions: [{ name: 'stream', at: 0, length: bytes.length }] }, input.muts);
  // Longer streams only repeat empty frames (4 zero bytes each, which the connection skips too).
  return img.slice(0, Math.min(img.size, 256 << 10));
}

/** Feeds a stream in chunks; the placer takes some frames' tails into buffers of the size asked, or of a wrong one. */
function feed(bytes: Buffer, cuts: number[], place: number[]): void {
  let delivered = 0;
  let asks = 0;
  const reader = new FrameReader((frame, placed) => {
    delivered += frame.length + (placed?.length ?? 0);
    if (delivered > bytes.length) throw new Violation('crash', `FrameReader delivered ${delivered} bytes from a stream of ${bytes.length}`);
    // As the connection does: a placed READ's prefix is a header, anything else a reply (chain) to parse.
    if (placed) parseHeader(frame);
    else parseReply(frame);
  });
  reader.placer = (prefix, len) => {
    const choice = place[asks++ % Math.max(1, place.length)] ?? 0;
    if (prefix.length !== PLACE_PREFIX) throw new Violation('crash', `placer got a prefix of ${prefix.length} bytes`);
    // Like the client, offer buffers only for replies that fit what was asked (here: the stream), never 16 MiB blindly.
    return choice % 3 === 0 || len > bytes.length ? null : Buffer.alloc(choice % 3 === 1 ? len - PLACE_PREFIX : Math.max(0, len - PLACE_PREFIX - 1));
  };
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    const end = Math.min(bytes.length, at + Math.max(1, c));
    // Alternate transient chunks (a reused receive buffer) and owned ones.
    reader.push(bytes.subarray(at, end), (at & 1) === 1);
    at = end;
    if (at >= bytes.length) break;
  }
}

export const smbFrames = defineTarget<Reply[], FrameInput>({
  name: 'smb-frames',
  about: 'direct-TCP frame reassembly (FrameReader) of mutated reply streams cut in random chunks, with the READ placer taking frame tails; each frame parsed as the connection does',
  weight: 1,
  async prepare() {
    return replies();
  },
  arbitrary: () =>
    fc.record({
      replies: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
      muts: mutationsArb(3),
      cuts: fc.array(fc.integer({ min: 1, max: 5000 }), { maxLength: 12 }),
      place: fc.array(fc.nat(), { maxLength: 4 }),
    }),
  async run(all, input) {
    const bytes = stream(all, input);
    await withAllocationCap(MESSAGE_CAP, async () => feed(bytes, input.cuts, input.place));
  },
  save: (all, input) => Buffer.concat([Buffer.from(JSON.stringify({ cuts: input.cuts, place: input.place }) + '\n'), stream(all, input)]),
  async replay(file) {
    const nl = file.indexOf(0x0a);
    const { cuts, place } = JSON.parse(file.subarray(0, nl).toString()) as { cuts: number[]; place: number[] };
    await withAllocationCap(MESSAGE_CAP, async () => feed(file.subarray(nl + 1), cuts, place));
  },
  describe: (all, input) => inputText(input),
});
