/** SPNEGO ([RFC 4178], [MS-SPNG]) wrapping for NTLMSSP: the initial token, the response, and parsing the server's. */
import { IoError } from '../../util/errors.js';
import { readTlvs, tlv } from './der.js';

const SPNEGO_OID = Buffer.from([0x2b, 0x06, 0x01, 0x05, 0x05, 0x02]);
const NTLMSSP_OID = Buffer.from([0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a]);

/** negState values of a NegTokenResp. */
export const NEG_STATE = { ACCEPT_COMPLETED: 0, ACCEPT_INCOMPLETE: 1, REJECT: 2, REQUEST_MIC: 3 } as const;

/** The DER MechTypeList the client offers (only NTLMSSP); mechListMIC signs exactly these bytes. */
export const MECH_TYPE_LIST = tlv(0x30, tlv(0x06, NTLMSSP_OID));

/** The GSS-API InitialContextToken carrying a NegTokenInit that offers NTLMSSP with its first message. */
export function negTokenInit(mechToken: Uint8Array): Buffer {
  const mechTypes = tlv(0xa0, MECH_TYPE_LIST);
  const token = tlv(0xa2, tlv(0x04, mechToken));
  return tlv(0x60, tlv(0x06, SPNEGO_OID), tlv(0xa0, tlv(0x30, mechTypes, token)));
}

/** A NegTokenResp carrying the client's next NTLMSSP message and, when given, the mechListMIC. */
export function negTokenResp(responseToken: Uint8Array, mechListMic?: Uint8Array): Buffer {
  const fields = [tlv(0xa2, tlv(0x04, responseToken))];
  if (mechListMic) fields.push(tlv(0xa3, tlv(0x04, mechListMic)));
  return tlv(0xa1, tlv(0x30, ...fields));
}

/** What the server's NegTokenResp says. */
export interface ServerNegToken {
  negState: number | null;
  responseToken: Buffer | null;
  mechListMic: Buffer | null;
}

/** Parses the server's NegTokenResp (the session-setup replies). */
export function parseNegTokenResp(b: Buffer): ServerNegToken {
  const [outer] = readTlvs(b);
  if (!outer || outer.tag !== 0xa1) throw new IoError('unexpected SPNEGO token from server');
  const [seq] = readTlvs(outer.content);
  if (!seq || seq.tag !== 0x30) throw new IoError('unexpected SPNEGO token from server');
  const res: ServerNegToken = { negState: null, responseToken: null, mechListMic: null };
  for (const f of readTlvs(seq.content)) {
    const [inner] = readTlvs(f.content);
    if (!inner) continue;
    if (f.tag === 0xa0 && inner.tag === 0x0a && inner.content.length === 1) res.negState = inner.content[0];
    if (f.tag === 0xa2 && inner.tag === 0x04) res.responseToken = Buffer.from(inner.content);
    if (f.tag === 0xa3 && inner.tag === 0x04) res.mechListMic = Buffer.from(inner.content);
  }
  return res;
}
