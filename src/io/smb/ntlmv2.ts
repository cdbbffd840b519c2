/** NTLMv2 response and key computation ([MS-NLMP] 3.3.2), the only NTLM variant Samba accepts by default. */
import { createHmac } from 'node:crypto';
import { md4 } from './md4.js';

const hmacMd5 = (key: Uint8Array, ...data: Uint8Array[]): Buffer => {
  const h = createHmac('md5', key);
  for (const d of data) h.update(d);
  return h.digest();
};

/** NTOWFv2: HMAC-MD5 keyed with the NT hash over upper-cased user name and the domain, both UTF-16LE. */
export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return hmacMd5(md4(Buffer.from(password, 'utf16le')), Buffer.from(user.toUpperCase() + domain, 'utf16le'));
}

/** What the client sends and keeps after answering a challenge. */
export interface NtlmV2Answer {
  ntProofStr: Buffer;
  /** NtChallengeResponse: NTProofStr followed by the client's blob. */
  ntResponse: Buffer;
  /** LmChallengeResponse (LMv2), or 24 zero bytes when the server sent a timestamp. */
  lmResponse: Buffer;
  sessionBaseKey: Buffer;
}

/**
 * Answers `serverChallenge` for the NTLMv2 response key. `time` is the 8-byte FILETIME to put in the blob,
 * `targetInfo` the AV pairs the client echoes (the server's, possibly extended).
 */
export function ntlmv2Answer(
  responseKey: Uint8Array,
  serverChallenge: Uint8Array,
  clientChallenge: Uint8Array,
  time: Uint8Array,
  targetInfo: Uint8Array,
  zeroLm = false,
): NtlmV2Answer {
  const temp = Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), time, clientChallenge, Buffer.alloc(4), targetInfo, Buffer.alloc(4)]);
  const ntProofStr = hmacMd5(responseKey, serverChallenge, temp);
  const lmResponse = zeroLm ? Buffer.alloc(24) : Buffer.concat([hmacMd5(responseKey, serverChallenge, clientChallenge), clientChallenge]);
  return {
    ntProofStr,
    ntResponse: Buffer.concat([ntProofStr, temp]),
    lmResponse,
    sessionBaseKey: hmacMd5(responseKey, ntProofStr),
  };
}
