/** The small fixed-size requests: CLOSE, FLUSH, ECHO, LOGOFF, TREE_DISCONNECT ([MS-SMB2] 2.2.7, 2.2.11, 2.2.15, 2.2.17, 2.2.28). */

/** A CLOSE request body. */
export function serializeCloseRequest(fileId: Buffer): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(24, 0);
  fileId.copy(b, 8);
  return b;
}

/** A FLUSH request body. */
export function serializeFlushRequest(fileId: Buffer): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(24, 0);
  fileId.copy(b, 8);
  return b;
}

/** The 4-byte body shared by ECHO, LOGOFF and TREE_DISCONNECT requests. */
export function serializeEmptyRequest(): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16LE(4, 0);
  return b;
}
