// Child process for the lock race test: on each `go` line from the parent it tries to take the lock of IMAGE
// and answers `won` or `busy` (or `error <message>`); on `drop` it releases what it holds and answers `dropped`.
// Between rounds the winner releases its lock; the parent then plants the next stale one.
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';

const [dist, image, timingJson] = process.argv.slice(2);
const load = (m) => import(pathToFileURL(path.join(dist, m)).href);
const { lockImage } = await load('sync/lock.js');
const { parseLocation } = await load('io/location.js');
const schemes = await load('io/schemes.js');
const where = await parseLocation(image);
const timing = timingJson ? JSON.parse(timingJson) : undefined;
let held = [];

const lines = createInterface({ input: process.stdin });
process.stdout.write('ready\n');
for await (const line of lines) {
  if (line === 'go') {
    try {
      held.push(await lockImage(where, "copy", timing));
      process.stdout.write('won\n');
    } catch (err) {
      process.stdout.write(err?.name === 'BusyError' ? 'busy\n' : `error ${String(err?.stack ?? err).replace(/\n/g, " | ")}\n`);
    }
  } else if (line === 'drop') {
    // The parent plants the next stale lock after this.
    for (const l of held) await l.release();
    held = [];
    process.stdout.write('dropped\n');
  } else if (line === 'quit') {
    break;
  }
}
await schemes.closeAllSmbSessions?.();
process.exit(0);
