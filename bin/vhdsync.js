#!/usr/bin/env node
// Entry point: the CLI is dist/bundle/main.js, tsc's dist/cli/main.js bundled with its imports into ESM chunks
// (scripts/bundle.js; built by `npm ci` (prepare) or `npm run build`).
import { main } from '../dist/bundle/main.js';

// `vhdsync info x | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on('error', (err) => {
  if (err && err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`vhdsync: internal error: ${err && err.message ? err.message : err}\n`);
    process.exitCode = 1;
  },
);
