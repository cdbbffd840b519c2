/** NTLMSSP messages ([MS-NLMP] 2.2.1): NEGOTIATE and AUTHENTICATE built, CHALLENGE parsed and checked. */
import { createHmac, randomBytes } from 'node:crypto';
import { IoError } from '../../util/errors.js';
import { ntowfv2, ntlmv2Answer } from './ntlmv2.js';
import { rc4 } from './rc4.js';

const SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1');

export const NTLM_FLAGS = {
  UNICODE: 0x00000001,
  REQUEST_TARGET: 0x00000004,
  SIGN: 0x00000010,
  NTLM: 0x00000200,
  ALWAYS_SIGN: 0x00008000,
  EXTENDED_SESSIONSECURITY: 0x00080000,
  TARGET_INFO: 0x00800000,
  VERSION: 0x02000000,
  N128: 0x20000000,
  KEY_EXCH: 0x40000000,
  N56: 0x80000000,
} as const;

/** The flags this client offers: NTLMv2 with extended session security, 128-bit keys and key exchange. */
export const CLIENT_FLAGS =
  (NTLM_FLAGS.UNICODE |
    NTLM_FLAGS.REQUEST_TARGET |
    NTLM_FLAGS.SIGN |
    NTLM_FLAGS.NTLM |
    NTLM_FLAGS.ALWAYS_SIGN |
    NTLM_FLAGS.EXTENDED_SESSIONSECURITY |
    NTLM_FLAGS.VERSION |
    NTLM_FLAGS.N128 |
    NTLM_FLAGS.KEY_EXCH |
    NTLM_FLAGS.N56) >>>
  0;

/** Windows 10 build 0, NTLMSSP revision 15: servers only log it. */
const VERSION = Buffer.from([10, 0, 0, 0, 0, 0, 0, 15]);

/** AV pair ids used here ([MS-NLMP] 2.2.2.1). */
export const AV = { EOL: 0, NB_COMPUTER: 1, NB_DOMAIN: 2, FLAGS: 6, TIMESTAMP: 7 } as const;
/** MsvAvFlags bit: the AUTHENTICATE_MESSAGE carries a MIC. */
const AV_FLAG_MIC = 0x2;

/** A NEGOTIATE_MESSAGE without domain or workstation (they are optional and only informative). */
export function negotiateMessage(flags = CLIENT_FLAGS): Buffer {
  const b = Buffer.alloc(40);
  SIGNATURE.copy(b, 0);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(flags, 12);
  // Domain and workstation fields stay empty, pointing at the end of the fixed part.
  b.writeUInt32LE(40, 20);
  b.writeUInt32LE(40, 28);
  VERSION.copy(b, 32);
  return b;
}

/** The parts of a CHALLENGE_MESSAGE a client needs. */
export interface ChallengeMessage {
  flags: number;
  serverChallenge: Buffer;
  targetInfo: Buffer;
  /** The server's timestamp AV pair (8 bytes), when present. */
  timestamp: Buffer | null;
  /** The message as received (the MIC covers it). */
  raw: Buffer;
}

function field(b: Buffer, at: number, what: string): Buffer {
  const len = b.readUInt16LE(at);
  const off = b.readUInt32LE(at + 4);
  if (off + len > b.length) throw new IoError(`malformed NTLM challenge: ${what} lies outside the message`);
  return b.subarray(off, off + len);
}

/** Parses a CHALLENGE_MESSAGE, bounding every field by the message's length. */
export function parseChallenge(b: Buffer): ChallengeMessage {
  if (b.length < 48 || !b.subarray(0, 8).equals(SIGNATURE) || b.readUInt32LE(8) !== 2) {
    throw new IoError('malformed NTLM challenge from server');
  }
  const flags = b.readUInt32LE(20);
  const targetInfo = flags & NTLM_FLAGS.TARGET_INFO ? field(b, 40, 'target info') : Buffer.alloc(0);
  let timestamp: Buffer | null = null;
  for (let p = 0; p + 4 <= targetInfo.length; ) {
    const id = targetInfo.readUInt16LE(p);
    const len = targetInfo.readUInt16LE(p + 2);
    if (p + 4 + len > targetInfo.length) throw new IoError('malformed NTLM challenge: AV pair past its end');
    if (id === AV.EOL) break;
    if (id === AV.TIMESTAMP && len === 8) timestamp = Buffer.from(targetInfo.subarray(p + 4, p + 12));
    p += 4 + len;
  }
  return { flags, serverChallenge: Buffer.from(b.subarray(24, 32)), targetInfo: Buffer.from(targetInfo), timestamp, raw: Buffer.from(b) };
}

/** Who authenticates. */
export interface NtlmCredentials {
  user: string;
  password: string;
  domain: string;
  workstation?: string;
}

/** Randomness and time, injectable so tests can use [MS-NLMP]'s fixed values. */
export interface AuthenticateInputs {
  clientChallenge?: Buffer;
  randomSessionKey?: Buffer;
  time?: Buffer;
}

/** The current time as a little-endian FILETIME (100 ns ticks since 1601). */
export function fileTimeNow(): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE((BigInt(Date.now()) + 11644473600000n) * 10000n);
  return b;
}

/** The server's AV pairs with MsvAvFlags saying a MIC follows, placed before the terminating MsvAvEOL. */
function withMicFlag(targetInfo: Buffer): Buffer {
  const pairs: Buffer[] = [];
  for (let p = 0; p + 4 <= targetInfo.length; ) {
    const id = targetInfo.readUInt16LE(p);
    const len = targetInfo.readUInt16LE(p + 2);
    if (id === AV.EOL) break;
    if (id !== AV.FLAGS) pairs.push(targetInfo.subarray(p, p + 4 + len));
    p += 4 + len;
  }
  const flags = Buffer.from([AV.FLAGS, 0, 4, 0, AV_FLAG_MIC, 0, 0, 0]);
  return Buffer.concat([...pairs, flags, Buffer.alloc(4)]);
}

/** What answering a challenge produced. */
export interface Authentication {
  message: Buffer;
  /** The exported session key both ends now share. */
  sessionKey: Buffer;
  /** The flags both ends agreed on. */
  flags: number;
  /** Whether the message carries a MIC (then SPNEGO must carry a mechListMIC too). */
  mic: boolean;
}

/**
 * Builds the AUTHENTICATE_MESSAGE. With `negotiate` (the NEGOTIATE_MESSAGE sent) and a server that sent a
 * timestamp, it carries a MIC over all three messages, as [MS-NLMP] 3.1.5.1.2 asks of clients.
 */
export function authenticateMessage(
  creds: NtlmCredentials,
  challenge: ChallengeMessage,
  inputs: AuthenticateInputs = {},
  negotiate?: Buffer,
): Authentication {
  const mic = negotiate !== undefined && challenge.timestamp !== null;
  const flags = (CLIENT_FLAGS & challenge.flags) | NTLM_FLAGS.UNICODE;
  const key = ntowfv2(creds.password, creds.user, creds.domain);
  const clientChallenge = inputs.clientChallenge ?? randomBytes(8);
  const answer = ntlmv2Answer(
    key,
    challenge.serverChallenge,
    clientChallenge,
    inputs.time ?? challenge.timestamp ?? fileTimeNow(),
    mic ? withMicFlag(challenge.targetInfo) : challenge.targetInfo,
    challenge.timestamp !== null,
  );
  // With NTLMv2 the key-exchange key is the session base key ([MS-NLMP] 3.4.5.1).
  let sessionKey: Buffer = answer.sessionBaseKey;
  let encryptedKey: Buffer = Buffer.alloc(0);
  if (flags & NTLM_FLAGS.KEY_EXCH) {
    sessionKey = inputs.randomSessionKey ?? randomBytes(16);
    encryptedKey = rc4(answer.sessionBaseKey, sessionKey);
  }
  const payloads = [
    answer.lmResponse,
    answer.ntResponse,
    Buffer.from(creds.domain, 'utf16le'),
    Buffer.from(creds.user, 'utf16le'),
    Buffer.from(creds.workstation ?? '', 'utf16le'),
    encryptedKey,
  ];
  const fixed = 88; // fields, flags, version and the MIC (left zero when there is none)
  const b = Buffer.alloc(fixed + payloads.reduce((n, p) => n + p.length, 0));
  SIGNATURE.copy(b, 0);
  b.writeUInt32LE(3, 8);
  let off = fixed;
  payloads.forEach((p, i) => {
    const at = 12 + i * 8;
    b.writeUInt16LE(p.length, at);
    b.writeUInt16LE(p.length, at + 2);
    b.writeUInt32LE(off, at + 4);
    p.copy(b, off);
    off += p.length;
  });
  b.writeUInt32LE(flags >>> 0, 60);
  VERSION.copy(b, 64);
  if (mic) createHmac('md5', sessionKey).update(negotiate!).update(challenge.raw).update(b).digest().copy(b, 72);
  return { message: b, sessionKey, flags: flags >>> 0, mic };
}
