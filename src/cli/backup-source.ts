/**
 * `backup` from an HTTP(S) export URL (XAPI's or Xen Orchestra's `export_raw_vdi`, our `serve`): the body, GET only
 * once the disk's lock is held, read forward as a VHD stream, a QCOW2 stream (metadata before data) or raw bytes.
 * Credentials come as for `stream`.
 */
import type { DiskFormat } from '../formats/disk.js';
import { hasFooterCookie } from '../formats/vhd/footer.js';
import type { HttpOptions } from '../io/http.js';
import { redactUrl } from '../util/redact-url.js';
import type { StreamSource } from '../repo/index.js';
import { ForwardReader, qcow2StreamContent, rawStreamContent, vhdStreamContent, type ContentSource } from '../stream/index.js';
import { UnsupportedError, UsageError } from '../util/errors.js';
import { httpSource } from './http-args.js';
import { peek } from './stream-endpoints.js';

/** True for a source given as an http(s):// URL. */
export function isUrl(text: string): boolean {
  return /^https?:\/\//i.test(text);
}

/** Query parameters that are credentials (XAPI's session reference): never kept in a manifest or printed. */
const SECRET_PARAMS = ['session_id'];

/** Parses a URL the user gave, refusing a malformed one with a usage error that does not show its credentials. */
export function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch {
    throw new UsageError('not a valid URL', url.replace(/\/\/[^@/]*@/, '//'));
  }
}

/** The URL as the manifest records it: without credentials and session ids. */
export function urlDisplay(url: string): string {
  const u = new URL(redactUrl(parseUrl(url)));
  for (const p of SECRET_PARAMS) if (u.searchParams.has(p)) u.searchParams.set(p, '(hidden)');
  return u.toString();
}

/** A disk name from the URL: its `vdi=` value when that is a valid disk name (a uuid is), else none. */
export function urlDiskName(url: string): string | null {
  const vdi = parseUrl(url).searchParams.get('vdi');
  return vdi && /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(vdi) ? vdi : null;
}

/** The format of a stream from its first bytes: VHD, QCOW2 and VHDX by their signatures, else raw. */
function detectFormat(head: Buffer): DiskFormat {
  if (hasFooterCookie(head)) return 'vhd';
  const text = head.toString('latin1', 0, Math.min(8, head.length));
  if (text.startsWith('QFI\xfb')) return 'qcow2';
  if (text === 'vhdxfile') return 'vhdx';
  return 'raw';
}

/** The backup source for `url`; `format` forces the body's format (`--input-format`). */
export function httpBackupSource(url: string, http: HttpOptions, opts: { format?: DiskFormat; vhdSize?: 'chs' | 'current' }): StreamSource {
  const display = urlDisplay(url);
  return {
    kind: 'stream',
    display,
    open: async () => {
      const body = await httpSource(url, http);
      const close = async () => {
        await (body.bytes as AsyncGenerator<Buffer>).return?.(undefined);
      };
      try {
        const { head, rest } = await peek(body.bytes, 8);
        const format = opts.format ?? detectFormat(head);
        const reader = new ForwardReader(rest, display, body.length);
        let content: ContentSource;
        if (format === 'vhd') {
          content = await vhdStreamContent(reader, opts.vhdSize);
        } else if (format === 'qcow2') {
          content = await qcow2StreamContent(reader);
        } else if (format === 'raw') {
          if (body.length === null) throw new UsageError('a raw export without Content-Length does not say how large the disk is: export it with format=vhd', display);
          content = rawStreamContent(reader, body.length);
        } else {
          throw new UnsupportedError(`a ${format} export cannot be backed up as a stream (its metadata need not come before its data): export it with format=vhd, qcow2 or raw`, display);
        }
        return { content, logicalSectorSize: 512, close };
      } catch (err) {
        await close();
        throw err;
      }
    },
  };
}
