/** Small JSON files of ours (merge state, merge marker): bytes to one checked object. */

/**
 * Parses `bytes` as one JSON object, at most `maxBytes` long; `bad(why)` makes the error for anything else
 * ('too large', 'not JSON', 'not an object').
 */
export function parseJsonObject(bytes: Uint8Array, maxBytes: number, bad: (why: string) => Error): Record<string, unknown> {
  if (bytes.byteLength > maxBytes) throw bad('too large');
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    throw bad('not JSON');
  }
  if (typeof v !== 'object' || v === null) throw bad('not an object');
  return v as Record<string, unknown>;
}
