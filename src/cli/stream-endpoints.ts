/**
 * vhd-tool's spellings of sources and destinations: `stdin:` / `stdout:` / `-`, `null:`, `file://PATH`, plain paths
 * (and every location vhdsync opens, such as smb://), `http(s)://` URLs.
 */
import { parseLocation, type Location } from '../io/location.js';
import type { RandomAccessFile } from '../io/store.js';
import { UsageError } from '../util/errors.js';

/** Where bytes come from or go. */
export type Endpoint = { kind: 'pipe' } | { kind: 'null' } | { kind: 'http'; url: string } | { kind: 'location'; location: Location; text: string };

/** Parses `--source` / `--destination`. */
export async function parseEndpoint(text: string, role: 'source' | 'destination'): Promise<Endpoint> {
  if (text === '-' || text === (role === 'source' ? 'stdin:' : 'stdout:')) return { kind: 'pipe' };
  if (text === 'null:') {
    if (role === 'source') throw new UsageError("'null:' is only a destination");
    return { kind: 'null' };
  }
  if (/^https?:\/\//i.test(text)) return { kind: 'http', url: text };
  if (/^(stdin|stdout|fd|tcp|unix|nbd):/i.test(text)) throw new UsageError(`--${role} '${text}' is not supported (use a path, file://, -, stdin:/stdout:, null: or http(s)://)`);
  const path = /^file:\/\//i.test(text) ? decodeURIComponent(text.replace(/^file:\/\/(localhost)?/i, '')) : text;
  return { kind: 'location', location: await parseLocation(path), text: path };
}

/** Bytes of standard input, or of a file read front to back. */
export async function* fileBytes(file: RandomAccessFile, piece = 4 << 20): AsyncGenerator<Buffer> {
  const size = await file.size();
  for (let at = 0; at < size; at += piece) {
    const b = await file.read(at, Math.min(piece, size - at));
    if (b.length === 0) return;
    yield b;
  }
}

/** An iterable that yields `first` and then the rest of `it` (a peeked pipe put back together). */
export async function* prepend(first: Buffer, it: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  if (first.length) yield first;
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    yield r.value;
  }
}

/** Reads at least `n` bytes (fewer only at end of input) from an iterator; returns them and the iterator. */
export async function peek(source: AsyncIterable<Uint8Array>, n: number): Promise<{ head: Buffer; rest: AsyncIterable<Uint8Array> }> {
  const it = source[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let got = 0;
  while (got < n) {
    const r = await it.next();
    if (r.done) break;
    const b = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    parts.push(b);
    got += b.length;
  }
  const head = Buffer.concat(parts);
  return { head, rest: prepend(head, it) };
}

/**
 * yargs turns a lone `-` into an empty string or an unknown argument: vhd-tool's `--source -` / `--destination -`
 * become `--source=-`, and a positional `-` (`convert - out.vhdx`) becomes `stdin:`. `--progress=machine` (the global
 * --progress is a boolean) becomes vhd-tool's own `--progress --machine`.
 */
export function joinDashValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if ((args[i] === '--source' || args[i] === '--destination') && args[i + 1] === '-') {
      out.push(`${args[i]}=-`);
      i++;
    } else {
      if (args[i] === '--progress=machine') out.push('--progress', '--machine');
      else out.push(args[i] === '-' ? 'stdin:' : args[i]);
    }
  }
  return out;
}
