/**
 * NTLMSSP message signatures with extended session security ([MS-NLMP] 3.4.4.2, 3.4.5.2, 3.4.5.3), used
 * here only for SPNEGO's mechListMIC, which protects the mechanism list once the NTLM MIC is sent.
 */
import { createHash, createHmac } from 'node:crypto';
import { Rc4 } from './rc4.js';

const magic = (s: string) => Buffer.from(`session key to ${s} key magic constant\0`, 'latin1');

/** One direction's signing key, sealing key stream and sequence number. */
export class NtlmSigner {
  private readonly signKey: Buffer;
  private readonly handle: Rc4;
  private seq = 0;

  /** `direction` is 'client-to-server' to sign what we send, 'server-to-client' to check what we receive. */
  constructor(exportedSessionKey: Buffer, direction: 'client-to-server' | 'server-to-client', keyExchange: boolean) {
    this.signKey = createHash('md5').update(exportedSessionKey).update(magic(`${direction} signing`)).digest();
    const sealKey = createHash('md5').update(exportedSessionKey).update(magic(`${direction} sealing`)).digest();
    this.handle = new Rc4(sealKey);
    this.keyExchange = keyExchange;
  }

  private readonly keyExchange: boolean;

  /** The 16-byte NTLMSSP_MESSAGE_SIGNATURE of the next message. */
  sign(message: Uint8Array): Buffer {
    const seq = Buffer.alloc(4);
    seq.writeUInt32LE(this.seq++);
    let checksum: Buffer = createHmac('md5', this.signKey).update(seq).update(message).digest().subarray(0, 8);
    if (this.keyExchange) checksum = this.handle.update(checksum);
    return Buffer.concat([Buffer.from([1, 0, 0, 0]), checksum, seq]);
  }
}
