/** `restore`: writes a disk as it was at a restore point into a new image of any format, checked against the point's list. */
import type { DiskFormat } from '../formats/disk.js';
import { createDisk } from '../formats/open.js';
import { writeNonZero, zeroGranularity } from '../formats/transfer.js';
import { writeAtomically } from '../io/atomic.js';
import { displayLocation, type Location } from '../io/location.js';
import type { RepoBackend } from './backend.js';
import { resolvePoint } from './names.js';
import { assertSettled, checkedBlocks, manifestFor, openChecked } from './point-check.js';

/** Options for restorePoint. */
export interface RestoreOptions {
  /** A point id or a time (the newest point at or before it); default the newest point. */
  at?: string;
  format: DiskFormat;
  /** Replace DST if it exists. */
  force?: boolean;
  /** Check every block against the point's metafile (default); false writes the content unchecked. */
  verify?: boolean;
  onTotal?: (bytes: number) => void;
  onProgress?: (bytes: number) => void;
}

/** What a restore did. */
export interface RestoreSummary {
  disk: string;
  point: string;
  time: string;
  destination: string;
  format: DiskFormat;
  virtualSize: number;
  bytesWritten: number;
  verified: boolean;
  seconds: number;
}

/** Restores `disk` at a point into `dst` (written under a temp name, so a failed restore leaves nothing). */
export async function restorePoint(repo: RepoBackend, disk: string, dst: Location, opts: RestoreOptions): Promise<RestoreSummary> {
  const started = Date.now();
  const m = await manifestFor(repo, disk);
  const point = resolvePoint(m.points, opts.at, disk);
  assertSettled(repo, m, point);
  const verify = opts.verify !== false;
  const opened = await openChecked(repo, disk, point, verify);
  try {
    const { image } = opened;
    opts.onTotal?.(image.virtualSize);
    const bytesWritten = await writeAtomically(
      dst,
      async (temp) => {
        const out = await createDisk(temp, {
          format: opts.format,
          type: 'dynamic',
          virtualSize: image.virtualSize,
          logicalSectorSize: opts.format === 'vhdx' ? image.logicalSectorSize : undefined,
          finalLocation: dst,
        });
        let written = 0;
        try {
          const gran = zeroGranularity(out);
          for await (const b of checkedBlocks(repo, disk, point, opened, true)) {
            if (b.state === 'data') written += await writeNonZero(out, b.offset, b.data!, gran);
            opts.onProgress?.(b.length);
          }
        } finally {
          await out.close();
        }
        return written;
      },
      { overwrite: opts.force },
    );
    return { disk, point: point.id, time: point.time, destination: displayLocation(dst), format: opts.format, virtualSize: image.virtualSize, bytesWritten, verified: verify, seconds: (Date.now() - started) / 1000 };
  } finally {
    await opened.close();
  }
}
