/**
 * `vhdsync stream`: vhd-tool's stream command. Any image or chain (or a VHD or QCOW2 stream, raw bytes or XAPI
 * chunked frames on a pipe) to a file, a pipe, `null:` or an HTTP(S) PUT, as raw, a VHD stream, VHDX, QCOW2 or chunked
 * frames, full or relative to a base, each in one pass whose length is known before the first byte.
 */
import type { CommandModule, Options } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG } from './catalog.js';
import { createDisk, openDisk } from '../../formats/index.js';
import type { Disk, DiskFormat } from '../../formats/disk.js';
import { displayLocation, type Location } from '../../io/location.js';
import { writeAtomically } from '../../io/atomic.js';
import { redactUrl } from '../../util/redact-url.js';
// The modules for what this run does only: a disk to a file needs neither the pipe decoders nor the delta nor HTTP
// (those are loaded where they are used), and start-up is a fifth of a 1 GiB stream's time (docs/performance.md).
import type { ContentSource } from '../../stream/content.js';
import type { DeltaMethod } from '../../stream/delta.js';
import type { EncodedStream } from '../../stream/encoded.js';
import { encode, fullContent } from '../../stream/encode.js';
import type { ForwardReader } from '../../stream/forward-reader.js';
import { nullSink, sendToFile, sendToSink, writableSink } from '../../stream/sink.js';
import { UsageError, UnsupportedError } from '../../util/errors.js';
import { createMachineProgress, createProgress, type Progress } from '../../util/progress.js';
import { formatSize, parseSize } from '../../util/units.js';
import { openFlagSpecs, openOptionsFrom, type OpenArgs } from '../options.js';
import { JSON_OPTION, out, outJson, type GlobalArgs } from '../output.js';
import { fileBytes, parseEndpoint, peek, type Endpoint } from '../stream-endpoints.js';
import { HTTP_OPTIONS, httpDestination, httpSource, httpOptionsFrom, isXapiImport, type HttpArgs } from '../http-args.js';

const SOURCE_FORMATS = ['raw', 'vhd', 'vhdx', 'qcow2', 'chunked'] as const;
const DESTINATION_FORMATS = ['raw', 'vhd', 'vhdx', 'chunked', 'qcow2'] as const;

interface StreamArgs extends OpenArgs, GlobalArgs, HttpArgs {
  source: string;
  'source-format'?: (typeof SOURCE_FORMATS)[number];
  'relative-to'?: string;
  destination: string;
  'destination-format': (typeof DESTINATION_FORMATS)[number];
  size?: string;
  force?: boolean;
  progress?: boolean;
  machine?: boolean;
}

/** What the source turned out to be. */
type Source = { kind: 'disk'; disk: Disk } | { kind: 'content'; content: ContentSource } | { kind: 'chunked'; reader: ForwardReader; size: number };

/** The result of one run, as `--json` prints it. */
interface StreamSummary {
  source: string;
  destination: string;
  format: string;
  /** The announced length (what a Content-Length carries). */
  bytes: number;
  virtualSize: number;
  relativeTo?: string;
  method?: DeltaMethod;
  seconds: number;
}

/** stream's options, as data: yargs reads them, and so does the fast path (fast-args.ts). */
export function streamOptions(): Record<string, Options> {
  return {
    ...openFlagSpecs(),
    ...HTTP_OPTIONS,
    source: { type: 'string', default: 'stdin:', describe: 'image, path, file://, smb://, http(s):// URL, or stdin: / -' },
    'source-format': {
      choices: SOURCE_FORMATS,
      alias: 'input-format',
      describe: 'format of the source (default: detected from content; raw and chunked on a pipe must be named)',
    },
    'relative-to': { type: 'string', describe: 'send only what differs from this base image (VHD differencing, QCOW2 overlay backed by it, or chunked frames)' },
    destination: { type: 'string', default: 'stdout:', describe: 'path, file://, smb://, http(s):// URL (PUT), stdout: / -, or null:' },
    'destination-format': { choices: DESTINATION_FORMATS, default: 'raw' as const, describe: 'raw, vhd (vhd-tool layout), chunked (XAPI frames), qcow2, vhdx (each in one pass)' },
    size: { type: 'string', describe: 'virtual size of a raw or chunked source read from a pipe' },
    force: { type: 'boolean', describe: 'replace the destination file if it exists' },
    json: { ...JSON_OPTION, describe: 'print one JSON object (format, bytes = announced length, ...) on stdout' },
    machine: { type: 'boolean', describe: "with --progress (or as --progress=machine): one whole percentage per line on stdout, as vhd-tool's --machine" },
  };
}

/** `vhdsync stream`: see the file's comment. */
export const streamCommand: CommandModule<object, StreamArgs> & FastCommand = {
  ...CATALOG.stream,
  builder: (y) => y.options(streamOptions()) as never,
  fast: { positionals: [], options: streamOptions },
  handler: async (args) => {
    const started = Date.now();
    const dest = await parseEndpoint(args.destination, 'destination');
    const format = args['destination-format'];
    if (dest.kind === 'pipe' && (args.json || args.machine)) {
      throw new UsageError('--json and --progress=machine print on stdout, which carries the stream here: send the stream elsewhere');
    }
    const http = httpOptionsFrom(args);
    const source = await openSource(args, http);
    let base: Disk | null = null;
    try {
      let content: ContentSource | null = null;
      let method: DeltaMethod | undefined;
      if (args['relative-to']) {
        if (source.kind !== 'disk') throw new UsageError('--relative-to needs an image as --source, not a stream');
        // The base's format is always detected: --source-format names the source only.
        base = await openDisk(args['relative-to'], { ...openOptionsFrom(args), format: undefined });
        const { deltaContent } = await import('../../stream/delta.js');
        const delta = await deltaContent(source.disk, base, { finalLocation: dest.kind === 'location' ? dest.location : null });
        content = delta.source;
        method = delta.method;
      } else if (source.kind === 'disk') {
        content = await fullContent(source.disk, format);
      } else if (source.kind === 'content') {
        content = source.content;
      }
      const virtualSize = source.kind === 'chunked' ? source.size : content!.virtualSize;
      const progress = makeProgress(args);
      let bytes: number;
      if (source.kind === 'chunked') {
        if (dest.kind !== 'location') throw new UsageError('chunked frames as a source can only be written into an image file: give a path as --destination');
        if (format === 'chunked') throw new UsageError('--destination-format chunked from a chunked source: copy the bytes instead');
        bytes = await writeFromFrames(dest, format, source, args, progress);
      } else {
        // XAPI's qcow2 import ignores zero flags: zeros go as data there.
        const stream = await encode(format, content!, { zerosAsData: dest.kind === 'http' && isXapiImport(new URL(dest.url)) });
        progress.total(stream.length);
        bytes = stream.length;
        await send(stream, dest, args, http, progress.bar);
      }
      progress.bar.finish();
      const summary: StreamSummary = {
        source: describeSource(args.source, source),
        destination: dest.kind === 'location' ? displayLocation(dest.location) : dest.kind === 'http' ? redactUrl(dest.url) : args.destination,
        format,
        bytes,
        virtualSize,
        ...(base ? { relativeTo: displayLocation(base.location), method } : {}),
        seconds: (Date.now() - started) / 1000,
      };
      if (args.json) outJson(summary);
      else if (!args.quiet && dest.kind !== 'pipe' && !args.machine) {
        const what = base ? `delta from ${summary.relativeTo} (${method})` : 'full';
        out(`streamed ${summary.source} -> ${summary.destination} (${format}, ${what}): ${formatSize(bytes)}, ${summary.seconds.toFixed(2)} s`);
      }
    } finally {
      await base?.close().catch(() => {});
      if (source.kind === 'disk') await source.disk.close();
    }
  },
};

/** Opens `--source`: an image, or a stream on a pipe, a file or an HTTP body. */
async function openSource(args: StreamArgs, http: ReturnType<typeof httpOptionsFrom>): Promise<Source> {
  const ep = await parseEndpoint(args.source, 'source');
  const named = args['source-format'];
  if (ep.kind === 'location' && named !== 'chunked') {
    const opts = { ...openOptionsFrom(args), format: named as DiskFormat | undefined };
    return { kind: 'disk', disk: await openDisk(ep.location, opts) };
  }
  let bytes: AsyncIterable<Uint8Array>;
  let length: number | null = null;
  let name: string;
  if (ep.kind === 'location') {
    const file = await ep.location.store.open(ep.location.path, 'read');
    length = await file.size();
    name = displayLocation(ep.location);
    bytes = closing(fileBytes(file), () => file.close());
  } else if (ep.kind === 'http') {
    const body = await httpSource(ep.url, http);
    bytes = body.bytes;
    length = body.length;
    name = body.name;
  } else {
    bytes = process.stdin;
    name = 'stdin';
  }
  const [{ head, rest }, { hasFooterCookie }, { hasMagic: hasQcow2Magic }, streams] = await Promise.all([
    peek(bytes, 8),
    import('../../formats/vhd/footer.js'),
    import('../../formats/qcow2/header.js'),
    import('../../stream/index.js'),
  ]);
  const { ForwardReader, vhdStreamContent, qcow2StreamContent, rawStreamContent } = streams;
  const format = named ?? (hasFooterCookie(head) ? 'vhd' : hasQcow2Magic(head) ? 'qcow2' : null);
  if (!format) throw new UsageError(`cannot tell the format of ${name} from its content (no VHD footer or QCOW2 magic at its start): add --source-format raw or chunked`);
  const reader = new ForwardReader(rest, name, length);
  if (format === 'vhd') return { kind: 'content', content: await vhdStreamContent(reader, args['vhd-size']) };
  if (format === 'qcow2') return { kind: 'content', content: await qcow2StreamContent(reader) };
  if (format === 'vhdx') throw new UnsupportedError('a VHDX cannot be read as a stream (its metadata may follow its data): give it as a file', name);
  const size = args.size !== undefined ? parseSize(args.size, '--size') : length !== null && format === 'raw' ? length : null;
  if (size === null) throw new UsageError(`${format} on ${name} carries no disk size: add --size`);
  if (format === 'chunked') return { kind: 'chunked', reader, size };
  return { kind: 'content', content: rawStreamContent(reader, size) };
}

/** Closes a file when its bytes have been read (or reading stopped). */
async function* closing(it: AsyncIterable<Buffer>, close: () => Promise<void>): AsyncGenerator<Buffer> {
  try {
    yield* it;
  } finally {
    await close();
  }
}

/** A progress display that learns its total once the stream's length is known. */
function makeProgress(args: StreamArgs): { bar: Progress; total: (n: number) => void } {
  let inner: Progress | null = null;
  const bar: Progress = {
    advance: (n) => inner?.advance(n),
    set: (v) => inner?.set(v),
    finish: () => inner?.finish(),
  };
  const total = (n: number) => {
    if (args.machine) inner = createMachineProgress(n);
    else if (!args.json && !args.quiet && args.progress !== false) inner = createProgress('streaming', n, args.progress === true || Boolean(process.stderr.isTTY));
  };
  return { bar, total };
}

/** Sends an encoded stream to its destination. */
async function send(stream: EncodedStream, dest: Endpoint, args: StreamArgs, http: ReturnType<typeof httpOptionsFrom>, progress: Progress): Promise<void> {
  const tick = (n: number) => progress.advance(n);
  if (dest.kind === 'null') await sendToSink(stream, nullSink, tick);
  else if (dest.kind === 'pipe') await sendToSink(stream, writableSink(process.stdout), tick);
  else if (dest.kind === 'http') await httpDestination(dest.url, stream, http, tick);
  else {
    await writeAtomically(
      dest.location,
      async (temp) => {
        const file = await temp.store.createExclusive(temp.path);
        try {
          await sendToFile(stream, file, tick);
        } finally {
          await file.close();
        }
      },
      { overwrite: args.force },
    );
  }
}

/** Applies chunked frames (no index up front, so no one-pass re-encoding) onto a new image file; returns its file size. */
async function writeFromFrames(
  dest: Extract<Endpoint, { kind: 'location' }>,
  format: string,
  source: Extract<Source, { kind: 'chunked' }>,
  args: StreamArgs,
  progress: { bar: Progress; total: (n: number) => void },
): Promise<number> {
  const target: Location = dest.location;
  progress.total(source.size);
  return writeAtomically(
    target,
    async (temp) => {
      const disk = await createDisk(temp, { format: format as DiskFormat, type: 'dynamic', virtualSize: source.size, finalLocation: target });
      try {
        const { applyChunked } = await import('../../stream/apply.js');
        await applyChunked(source.reader, disk, { fresh: true, onProgress: (n) => progress.bar.advance(n) });
        await disk.flush();
        return await disk.file.size();
      } finally {
        await disk.close();
      }
    },
    { overwrite: args.force },
  );
}

function describeSource(text: string, source: Source): string {
  if (source.kind === 'disk') return displayLocation(source.disk.location);
  return /^https?:\/\//i.test(text) ? redactUrl(text) : text;
}
