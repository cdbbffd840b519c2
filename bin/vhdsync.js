#!/usr/bin/env node
// Entry point: the CLI lives in dist/cli/main.js, built by `npm ci` (prepare) or `npm run build`.
import { main } from '../dist/cli/main.js';

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
