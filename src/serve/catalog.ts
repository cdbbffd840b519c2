/**
 * The disks `serve` offers: the image files directly inside its folder, named by file name (with or without the
 * extension) or by uuid (VHD UniqueId, VHDX DataWriteGuid, or one assigned in a `<image>.uuid` sidecar for formats
 * without one). Nothing outside the folder is ever opened: names with separators, NUL, dot-files, `..`, symlinks
 * leading out, and chains whose parents lie outside resolve to nothing (404).
 */
import { randomUUID } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { openDisk } from '../formats/index.js';
import type { Disk, DiskFormat } from '../formats/disk.js';
import { chainOf } from '../formats/index.js';
import { writeBytesAtomically } from '../io/atomic.js';
import type { Location } from '../io/location.js';
import { displayLocation } from '../io/location.js';
import { openFreshMetafile, METAFILE_SUFFIX } from '../meta/index.js';
import { LOCK_SUFFIX } from '../sync/lock.js';
import { MERGE_STATE_SUFFIX } from '../sync/merge-state.js';
import { RequestError, VhdsyncError } from '../util/errors.js';
import type { DiskLocks } from './disk-locks.js';
import type { DiskSource, ExportedDisk } from './source.js';

/** Sidecar holding the uuid `serve` assigned to an image whose format has none (raw, qcow2). */
export const UUID_SUFFIX = '.uuid';
/** Files next to images that are not images themselves. */
const SIDECARS = [METAFILE_SUFFIX, LOCK_SUFFIX, MERGE_STATE_SUFFIX, UUID_SUFFIX, '.partial', '.stale', '.json', '.txt', '.md'];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** One disk as `GET /` lists it. */
export interface DiskEntry {
  name: string;
  format: DiskFormat;
  type: string;
  virtualSize: number;
  /** Bytes of the virtual disk that hold data (from allocation tables; all of a raw file). */
  allocated: number;
  fileSize: number;
  uuid: string | null;
  /** `fresh`, `stale` (image changed since its metafile), or `none`. */
  metafile: 'fresh' | 'stale' | 'none';
  parent: string | null;
}

/** The images of one folder. */
export class Catalog implements DiskSource {
  private realRoot: string | null = null;
  private readonly ids = new Map<string, { size: number; mtimeMs: number; uuid: string | null }>();

  constructor(
    /** The folder. */
    readonly root: Location,
    /** Never write sidecars (read-only service). */
    readonly readOnly: boolean,
    /** The disks this server uses: an export shares a disk with other exports, never with an import. */
    private readonly locks: DiskLocks,
  ) {}

  private get local(): boolean {
    return this.root.store.kind === 'local';
  }

  /** Checks the folder exists and remembers its real path (local folders). */
  async init(): Promise<void> {
    const st = await this.root.store.stat(this.root.path);
    if (!st || !st.isDirectory) throw new VhdsyncError('not a directory', displayLocation(this.root));
    if (this.local) this.realRoot = await realpath(this.root.path);
  }

  /** File names that may be images (a cheap filter: sidecars, hidden and temporary files are not). */
  async names(): Promise<string[]> {
    const names = await this.root.store.list(this.root.path);
    return names.filter((n) => isPlainName(n) && !SIDECARS.some((s) => n.endsWith(s)) && !n.includes('.takeover-')).sort();
  }

  /** The location of a plain name inside the folder. */
  at(name: string): Location {
    return { store: this.root.store, path: this.root.store.paths.join(this.root.path, name) };
  }

  /** True when `path` (a file of the local store) really lies inside the folder, symlinks resolved. */
  async inside(loc: Location): Promise<boolean> {
    if (loc.store !== this.root.store) return false;
    if (!this.local) {
      const dir = this.root.store.paths.dirname(loc.path);
      return dir === this.root.path || dir.startsWith(this.root.path + '/');
    }
    try {
      const real = await realpath(loc.path);
      return real.startsWith((this.realRoot ?? '') + '/');
    } catch {
      return false;
    }
  }

  /**
   * Resolves `vdi=`: a file name, a file name without its extension, or a uuid. Returns the image's file name;
   * anything that does not name an image inside the folder is a 404.
   */
  async resolve(text: string | undefined, what: 'vdi' | 'base' = 'vdi'): Promise<string> {
    if (text === undefined || text === '') throw new RequestError(400, `missing ${what} parameter${what === 'vdi' ? ' (or sr_id to import into a new disk)' : ''}`);
    const notFound = () => new RequestError(404, `no such disk: ${what}=${text.slice(0, 80)}`);
    if (!isPlainName(text)) throw notFound();
    const names = await this.names();
    let found: string | undefined = names.find((n) => n === text);
    if (!found) {
      const stems = names.filter((n) => stem(n) === text);
      if (stems.length > 1) throw new RequestError(404, `${what}=${text} is ambiguous (${stems.join(', ')}): give the file name`);
      found = stems[0];
    }
    if (!found && UUID_RE.test(text)) {
      for (const n of names) {
        if ((await this.uuidOf(n).catch(() => null))?.toLowerCase() === text.toLowerCase()) {
          found = n;
          break;
        }
      }
    }
    if (!found || !(await this.inside(this.at(found)))) throw notFound();
    const st = await this.root.store.stat(this.at(found).path);
    if (!st || st.isDirectory) throw notFound();
    return found;
  }

  /** Opens a resolved disk; a chain reaching outside the folder is refused as not found. */
  async open(name: string, writable = false): Promise<Disk> {
    let disk: Disk;
    try {
      disk = await openDisk(this.at(name), { writable });
    } catch (err) {
      if (err instanceof VhdsyncError) throw new RequestError(err instanceof RequestError ? err.status : 422, `cannot open ${name}: ${err.message}`);
      throw err;
    }
    for (const d of chainOf(disk).slice(1)) {
      if (!(await this.inside(d.location))) {
        await disk.close().catch(() => {});
        throw new RequestError(404, `no such disk: ${name} (its chain leaves the served folder)`);
      }
    }
    return disk;
  }

  /** Opens a resolved disk for an export, holding it for reading (shared with other exports) until closed. */
  async openExport(name: string): Promise<ExportedDisk> {
    const use = await this.locks.acquire(this.at(name), 'read');
    let disk: Disk;
    try {
      disk = await this.open(name);
    } catch (err) {
      await use.release();
      throw err;
    }
    return {
      disk,
      list: null,
      zeroScan: true,
      close: async () => {
        try {
          await disk.close();
        } finally {
          await use.release();
        }
      },
    };
  }

  hide(message: string): string {
    return message.split(this.root.path + '/').join('');
  }

  /** The uuid of an image: its own (VHD, VHDX) or the one in its sidecar, assigned now unless read-only. */
  async uuidOf(name: string, disk?: Disk): Promise<string | null> {
    const loc = this.at(name);
    const st = await this.root.store.stat(loc.path);
    if (!st) return null;
    const cached = this.ids.get(name);
    if (cached && cached.size === st.size && cached.mtimeMs === st.mtimeMs) return cached.uuid;
    const d = disk ?? (await openDisk(loc));
    let uuid: string | null;
    try {
      const id = (await d.identity()).contentId;
      uuid = id && (d.format === 'vhd' || d.format === 'vhdx') ? normalizeUuid(id) : await this.sidecarUuid(loc);
    } finally {
      if (!disk) await d.close();
    }
    this.ids.set(name, { size: st.size, mtimeMs: st.mtimeMs, uuid });
    return uuid;
  }

  private async sidecarUuid(image: Location): Promise<string | null> {
    const loc = { store: image.store, path: image.path + UUID_SUFFIX };
    const st = await loc.store.stat(loc.path);
    if (st && st.size <= 64) {
      const f = await loc.store.open(loc.path, 'read');
      try {
        const text = (await f.read(0, st.size)).toString('latin1').trim();
        if (UUID_RE.test(text)) return text.toLowerCase();
      } finally {
        await f.close();
      }
    }
    if (this.readOnly) return null;
    const uuid = randomUUID();
    await writeBytesAtomically(loc, Buffer.from(uuid + '\n'), { overwrite: true });
    return uuid;
  }

  /** Describes every image of the folder; files that do not open are left out. */
  async list(): Promise<DiskEntry[]> {
    const out: DiskEntry[] = [];
    for (const name of await this.names()) {
      if (!(await this.inside(this.at(name)))) continue;
      let disk: Disk;
      try {
        disk = await this.open(name);
      } catch {
        continue;
      }
      try {
        out.push({
          name,
          format: disk.format,
          type: disk.type,
          virtualSize: disk.virtualSize,
          allocated: await allocatedBytes(disk),
          fileSize: await disk.file.size(),
          uuid: await this.uuidOf(name, disk).catch(() => null),
          metafile: await metafileState(disk),
          parent: disk.parent ? disk.parent.location.store.paths.basename(disk.parent.location.path) : null,
        });
      } finally {
        await disk.close();
      }
    }
    return out;
  }
}

/** A name that stays inside a folder: no separators, NUL, control characters, leading dot, and not too long. */
export function isPlainName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && !/[/\\\x00-\x1f\x7f]/.test(name) && !name.startsWith('.') && !/^[a-z]:/i.test(name);
}

function stem(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
}

function normalizeUuid(id: string): string {
  const hex = id.replace(/[^0-9a-f]/gi, '').toLowerCase();
  if (hex.length !== 32) return id.toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function allocatedBytes(disk: Disk): Promise<number> {
  const WINDOW = 1 << 30;
  let n = 0;
  for (let at = 0; at < disk.virtualSize; at += WINDOW) {
    for (const e of await disk.status(at, Math.min(WINDOW, disk.virtualSize - at))) if (e.state === 'data') n += e.length;
  }
  return n;
}

async function metafileState(disk: Disk): Promise<'fresh' | 'stale' | 'none'> {
  const loc = { store: disk.location.store, path: disk.location.path + METAFILE_SUFFIX };
  if (!(await loc.store.stat(loc.path))) return 'none';
  try {
    await (await openFreshMetafile(disk)).close();
    return 'fresh';
  } catch {
    return 'stale';
  }
}
