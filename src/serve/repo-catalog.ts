/**
 * A backup repository (a folder with the repository marker, or `s3://BUCKET/PREFIX`) as what `serve` exports:
 * every restore point of every disk, read-only. `vdi=<disk>@<point id>` names a point (a time after the `@` names
 * the newest point at or before it), `vdi=<disk>` the disk's newest point, and every point has a uuid derived from
 * what identifies it, so it stays the same across restarts and hosts. Points are read through the repository's
 * backend and every block is checked against the point's list as it is read (repo/checked-disk.ts).
 */
import { createHash } from 'node:crypto';
import { NotFoundError, RequestError, UsageError, VhdsyncError } from '../util/errors.js';
import type { RepoBackend } from '../repo/backend.js';
import { checkedDisk } from '../repo/checked-disk.js';
import type { RestorePoint } from '../repo/manifest.js';
import { resolvePoint } from '../repo/names.js';
import { assertSettled, damaged, manifestFor, openChecked } from '../repo/point-check.js';
import type { DiskSource, ExportedDisk } from './source.js';

/** One restore point as `GET /` lists it. */
export interface PointEntry {
  /** `<disk>@<point id>`: what `vdi=` takes. */
  name: string;
  uuid: string;
  disk: string;
  point: string;
  /** When its backup started (ISO 8601, UTC). */
  time: string;
  /** The disk's newest point, which `vdi=<disk>` names. */
  newest: boolean;
  virtualSize: number;
  /** Bytes that differ from the previous point. */
  changedBytes: number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The restore points of one repository. */
export class RepositoryCatalog implements DiskSource {
  constructor(readonly repo: RepoBackend) {}

  async init(): Promise<void> {
    if (!(await this.repo.exists())) throw new NotFoundError('not a vhdsync repository (no vhdsync-repository.json)', this.repo.display);
  }

  async list(): Promise<PointEntry[]> {
    const out: PointEntry[] = [];
    for (const disk of await this.repo.listDisks()) {
      let points: RestorePoint[];
      try {
        points = (await manifestFor(this.repo, disk)).points;
      } catch (err) {
        // A disk whose manifest does not read is left out, as the folder catalog leaves out images that do not open.
        if (err instanceof VhdsyncError) continue;
        throw err;
      }
      points.forEach((p, i) => out.push(entryOf(disk, p, i === points.length - 1)));
    }
    return out;
  }

  async resolve(text: string | undefined, what: 'vdi' | 'base'): Promise<string> {
    if (text === undefined || text === '') throw new RequestError(400, `missing ${what} parameter (this server exports a backup repository: ${what}=DISK or ${what}=DISK@POINT, see GET /)`);
    const notFound = (why = '') => new RequestError(404, `no such restore point: ${what}=${text.slice(0, 120)}${why}`);
    if (UUID_RE.test(text)) {
      const found = (await this.list()).find((e) => e.uuid === text.toLowerCase());
      if (!found) throw notFound();
      return found.name;
    }
    const at = text.indexOf('@');
    const disk = at < 0 ? text : text.slice(0, at);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(disk)) throw notFound();
    const manifest = await this.repo.readManifest(disk).catch((err) => {
      if (err instanceof VhdsyncError) throw new RequestError(422, this.hide(err.describe()));
      throw err;
    });
    if (!manifest) throw notFound();
    try {
      return `${disk}@${resolvePoint(manifest.points, at < 0 ? undefined : text.slice(at + 1), disk).id}`;
    } catch (err) {
      if (err instanceof UsageError) throw notFound(`: ${err.message}`);
      throw err;
    }
  }

  async openExport(name: string): Promise<ExportedDisk> {
    const at = name.indexOf('@');
    const disk = name.slice(0, at);
    const m = await manifestFor(this.repo, disk);
    const point = m.points.find((p) => p.id === name.slice(at + 1));
    // Gone between resolve and open: a prune dropped it.
    if (!point) throw new RequestError(404, `no such restore point: ${name} (pruned meanwhile)`);
    assertSettled(this.repo, m, point);
    const opened = await openChecked(this.repo, disk, point, true);
    try {
      const checked = await checkedDisk(opened.image, opened.list!, (why) => damaged(this.repo, disk, point, why));
      return {
        disk: checked,
        list: opened.list,
        zeroScan: false,
        close: async () => {
          await checked.close();
          await opened.close();
        },
      };
    } catch (err) {
      await opened.close();
      throw err;
    }
  }

  hide(message: string): string {
    // The repository's place (a bucket and prefix, a folder) is the server's business; the messages name points.
    return message.split(this.repo.display.replace(/\/$/, '') + '/').join('').split(this.repo.display).join('the repository');
  }
}

/** A point's listing entry; its uuid is derived from the disk name, point id, time and image, which never change. */
function entryOf(disk: string, p: RestorePoint, newest: boolean): PointEntry {
  return { name: `${disk}@${p.id}`, uuid: pointUuid(disk, p), disk, point: p.id, time: p.time, newest, virtualSize: p.virtualSize, changedBytes: p.changedBytes };
}

/** A name-based uuid (RFC 9562 version 8, SHA-256) of a restore point. */
export function pointUuid(disk: string, p: RestorePoint): string {
  const h = createHash('sha256').update(`vhdsync-restore-point\0${disk}\0${p.id}\0${p.time}\0${p.image}`).digest();
  h[6] = (h[6] & 0x0f) | 0x80;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
