import type { CreateOptions, Disk, DiskFormat, FormatDriver, OpenOptions, ParentExpectation } from './disk.js';
import { displayLocation, parseLocation, type Location } from '../io/location.js';
import type { RandomAccessFile } from '../io/store.js';
import { ParentError, UnsupportedError, UsageError } from '../util/errors.js';
import { probeContainer } from './signatures.js';

/**
 * The start of an image file that probing and opening read first (OpenHints.readAhead): a VHDX's identifier, headers
 * and region tables (320 KiB), a VHD's footer copy and dynamic header, a QCOW2's header.
 */
const IMAGE_HEAD = 320 * 1024;

/** Chains deeper than this are refused: real chains are a handful deep, a loop is endless. */
export const MAX_CHAIN_DEPTH = 256;

const drivers: FormatDriver[] = [];

/** Registers a format driver; probes run in registration order, raw last. */
export function registerFormat(driver: FormatDriver): void {
  const i = drivers.findIndex((d) => d.name === driver.name);
  if (i >= 0) drivers.splice(i, 1);
  drivers.push(driver);
  drivers.sort((a, b) => Number(a.name === 'raw') - Number(b.name === 'raw'));
}

/** The driver for a format name. */
export function formatDriver(name: DiskFormat): FormatDriver {
  const d = drivers.find((x) => x.name === name);
  if (!d) throw new UsageError(`unknown format '${name}'`);
  return d;
}

/** The formats registered, in probe order. */
export function registeredFormats(): DiskFormat[] {
  return drivers.map((d) => d.name);
}

/** Opens a disk image by location string or Location, detecting its format by content and resolving its parent chain. */
export async function openDisk(where: string | Location, opts: OpenOptions = {}): Promise<Disk> {
  const loc = typeof where === 'string' ? await parseLocation(where) : where;
  return openInChain(loc, opts, []);
}

async function openInChain(loc: Location, opts: OpenOptions, chain: string[]): Promise<Disk> {
  const key = `${loc.store.kind}:${loc.path}`;
  if (chain.includes(key)) {
    throw new ParentError(`the parent chain loops back to ${displayLocation(loc)}`, displayLocation({ store: loc.store, path: chain[0].slice(chain[0].indexOf(':') + 1) }));
  }
  if (chain.length >= MAX_CHAIN_DEPTH) throw new ParentError(`parent chain deeper than ${MAX_CHAIN_DEPTH}`, displayLocation(loc));
  // Parents are opened read-only: writing a child never modifies its parent.
  const fileOpts = chain.length === 0 ? opts : { ...opts, writable: false };
  const file = await loc.store.open(loc.path, fileOpts.writable ? 'readwrite' : 'read', { readAhead: IMAGE_HEAD, syncIo: opts.syncIo, writeBehind: fileOpts.writable && opts.writeBehind });
  try {
    // A parent's format is whatever its child names (openParent sets it, or clears the child's own).
    const driver = opts.format ? formatDriver(opts.format) : await detect(file, displayLocation(loc));
    const nextChain = [...chain, key];
    return await driver.open(file, loc, fileOpts, (candidates, child, o, expect) =>
      openParent(candidates, child, o, expect, nextChain),
    );
  } catch (err) {
    await file.close().catch(() => {});
    throw err;
  }
}

/**
 * The registered non-raw driver a file's content belongs to, or null for content that is none of them (raw).
 * A container that no driver reads is refused by name rather than taken for raw.
 */
export async function detectStructured(file: RandomAccessFile, subject: string): Promise<FormatDriver | null> {
  // Probes only read, so they run together (one round trip on a share instead of one each); the first driver in
  // registration order that recognises the content wins, as when they ran one after another.
  const structured = drivers.filter((d) => d.name !== 'raw');
  const hits = await Promise.all(structured.map((d) => d.probe(file)));
  if (hits.includes(true)) return structured[hits.indexOf(true)];
  const container = await probeContainer(file);
  if (container) {
    throw new UnsupportedError(
      `${container.name}, a format vhdsync does not read (it reads ${drivers.map((d) => d.name).join(', ')}): ${container.remedy}, or give --input-format raw to take the file's bytes as a raw disk`,
      subject,
    );
  }
  return null;
}

/** The driver for a file's content: the registered formats, then the refused containers, then raw. */
async function detect(file: RandomAccessFile, subject: string): Promise<FormatDriver> {
  const found = await detectStructured(file, subject);
  if (found) return found;
  const raw = drivers.find((d) => d.name === 'raw');
  if (!raw) throw new UsageError('no format driver registered', subject);
  return raw;
}

async function openParent(
  candidates: Location[],
  child: Location,
  opts: OpenOptions,
  expect: ParentExpectation,
  chain: string[],
): Promise<Disk> {
  const tried: string[] = [];
  for (const cand of candidates) {
    tried.push(displayLocation(cand));
    const st = await cand.store.stat(cand.path).catch(() => null);
    if (!st || st.isDirectory) continue;
    const parent = await openInChain(cand, { ...opts, writable: false, format: expect.format }, chain);
    if (!opts.ignoreParentMismatch && !(await expect.matches(parent))) {
      const got = (await parent.identity()).contentId;
      await parent.close();
      throw new ParentError(
        `parent ${displayLocation(cand)} does not match: child expects ${expect.idName} ${expect.id}, parent has ${got} (the parent changed after this child was made; use --ignore-parent-mismatch only if you know the parent's content is unchanged)`,
        displayLocation(child),
      );
    }
    return parent;
  }
  throw new ParentError(
    `parent image not found (looked for ${tried.length ? tried.join(', ') : 'no locator'})`,
    displayLocation(child),
  );
}

/** Creates a new image (the location must not exist) and returns it opened for writing. */
export async function createDisk(where: string | Location, opts: CreateOptions): Promise<Disk> {
  const loc = typeof where === 'string' ? await parseLocation(where) : where;
  return formatDriver(opts.format).create(loc, opts);
}

/** Walks a disk's chain from the disk itself to its base. */
export function chainOf(disk: Disk): Disk[] {
  const out: Disk[] = [];
  for (let d: Disk | null = disk; d; d = d.parent) out.push(d);
  return out;
}
