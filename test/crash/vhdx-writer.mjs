// Child process for the VHDX crash test: opens an image writable (replaying a dirty log), then
// performs deterministic writes, announcing each before it starts and after it is flushed, until killed.
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';
import { pattern } from './vhdx-writer-run.mjs';

const [dist, image, firstArg, countArg, seedArg] = process.argv.slice(2);
const { openDisk } = await import(pathToFileURL(path.join(dist, 'formats/index.js')).href);
const first = Number(firstArg);
const count = Number(countArg);
let s = Number(seedArg) >>> 0;
const rand = () => {
  s = (s * 1664525 + 1013904223) >>> 0;
  return s / 2 ** 32;
};
const disk = await openDisk(image, { writable: true });
process.stdout.write('ready\n');
for (let i = first; i < first + count; i++) {
  // Zeroing whole blocks frees them (a BAT change); writing there again allocates anew: both go through the log.
  const zero = rand() < 0.3;
  const len = 1 + Math.floor(rand() * (zero || rand() < 0.2 ? 3 << 20 : 70000));
  const off = Math.floor(rand() * (disk.virtualSize - len));
  process.stdout.write(`start ${i} ${off} ${len} ${zero ? 'zero' : 'data'}\n`);
  if (zero) await disk.writeZeroes(off, len);
  else await disk.write(off, pattern(i, len));
  await disk.flush();
  process.stdout.write(`done ${i}\n`);
}
await disk.close();
process.stdout.write('closed\n');
