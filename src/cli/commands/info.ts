import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { chainOf, openDisk } from '../../formats/index.js';
import type { Disk, DiskInfo } from '../../formats/disk.js';
import { displayLocation } from '../../io/location.js';
import { formatSize } from '../../util/units.js';
import { openOptionsFrom, withOpenOptions, type OpenArgs } from '../options.js';
import { out, outJson, withJson } from '../output.js';

interface InfoArgs extends OpenArgs {
  file: string;
  json?: boolean;
}

/** Everything `info` reports about a disk: its own fields plus the chain below it. */
export async function describeDisk(disk: Disk): Promise<DiskInfo> {
  const info = await disk.info();
  const chain = chainOf(disk);
  if (chain.length > 1) info.chain = chain.map((d) => `${d.format} ${d.type} ${displayLocation(d.location)}`);
  return info;
}

const SIZE_KEYS = new Set(['virtualSize', 'fileSize', 'blockSize']);

/** Renders info as aligned `Key: value` lines, sizes in both bytes and units. */
export function renderInfo(info: DiskInfo): string[] {
  const lines: string[] = [];
  const label = (k: string) => k.replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/^./, (c) => c.toUpperCase());
  const width = Math.max(...Object.keys(info).map((k) => label(k).length)) + 1;
  for (const [k, v] of Object.entries(info)) {
    if (v === null || v === undefined) continue;
    const head = `${label(k)}:`.padEnd(width + 1);
    if (Array.isArray(v)) {
      lines.push(head + (v.length ? v[0] : '(none)'));
      for (const item of v.slice(1)) lines.push(' '.repeat(width + 1) + item);
    } else if (typeof v === 'object') {
      lines.push(head.trimEnd());
      for (const [k2, v2] of Object.entries(v)) lines.push(`  ${k2}: ${typeof v2 === 'object' ? JSON.stringify(v2) : String(v2)}`);
    } else if (typeof v === 'number' && SIZE_KEYS.has(k) && v >= 1024) {
      lines.push(`${head}${v} (${formatSize(v)})`);
    } else {
      lines.push(head + String(v));
    }
  }
  return lines;
}

/** `vhdsync info`: what an image is, like `vhd-tool info` and `qemu-img info`. */
export const infoCommand: CommandModule<object, InfoArgs> = {
  ...CATALOG.info,
  builder: (y) => withJson(withOpenOptions(y, true)).positional('file', { type: 'string', demandOption: true }) as never,
  handler: async (args) => {
    const disk = await openDisk(args.file, openOptionsFrom(args));
    try {
      const info = await describeDisk(disk);
      if (args.json) outJson(info);
      else for (const line of renderInfo(info)) out(line);
    } finally {
      await disk.close();
    }
  },
};
