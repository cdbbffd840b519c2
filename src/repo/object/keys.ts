/**
 * Where things live in an object repository (docs/repository.md, "Repositories on object storage"): every key,
 * relative to the repository's prefix, is built and parsed here and nowhere else.
 */
import { isPointId } from '../names.js';

/** Generations are written with this many digits, so listing order is generation order. */
const GENERATION_DIGITS = 12;
const GENERATION_NAME = /^(\d{12})\.json$/;
const BLOCK_NAME = /^[0-9a-f]{64}$/;

/** Zero-padded generation, as in manifest and lease keys. */
function generationName(generation: number): string {
  return String(generation).padStart(GENERATION_DIGITS, '0') + '.json';
}

/** The generation a manifest or lease key's last part names, or null for a name that is not one. */
export function parseGeneration(name: string): number | null {
  const m = GENERATION_NAME.exec(name);
  return m ? Number(m[1]) : null;
}

/** Folder of every disk's manifests: one object per generation. Listing it lists the disks. */
export const MANIFESTS = 'manifests/';

/** A disk's manifests. */
export function manifestPrefix(disk: string): string {
  return `${MANIFESTS}${disk}/`;
}

/** One generation of a disk's manifest. */
export function manifestKey(disk: string, generation: number): string {
  return manifestPrefix(disk) + generationName(generation);
}

/** Folder of every disk's lease objects. */
export const LEASES = 'leases/';

/** A disk's lease objects (one per generation of holders). */
export function leasePrefix(disk: string): string {
  return `${LEASES}${disk}/`;
}

/** The lease object of one holder generation. */
export function leaseKey(disk: string, generation: number): string {
  return leasePrefix(disk) + generationName(generation);
}

/** Everything of a disk's points: their maps, their lists, their blocks. */
export function diskPrefix(disk: string): string {
  return `disks/${disk}/`;
}

/** A point's map (the manifest's `image`, relative to the disk's prefix). */
export function pointMapName(id: string): string {
  return `${id}.map`;
}

/** The point id a map's name (relative to the disk's prefix) carries, or null for another name. */
export function parseMapName(name: string): string | null {
  const id = name.endsWith('.map') ? name.slice(0, -'.map'.length) : null;
  return id !== null && isPointId(id) ? id : null;
}

/** A point's list (its metafile), relative to the disk's prefix. */
export function pointListName(id: string): string {
  return `${id}.list`;
}

/** A block object, relative to the disk's prefix: named by the SHA-256 of its content. */
export function blockName(sha256hex: string): string {
  return `blocks/${sha256hex}`;
}

/** The SHA-256 (hex) a block object's name (relative to the disk's prefix) carries, or null for another name. */
export function parseBlockName(name: string): string | null {
  if (!name.startsWith('blocks/')) return null;
  const h = name.slice('blocks/'.length);
  return BLOCK_NAME.test(h) ? h : null;
}
