// End-to-end tests run the built CLI (bin/vhdsync.js -> dist/bundle/), so build once before any test runs
// (scripts/build.js: tsc, then the bundle, each file put in place whole, since another jest run in the same tree may
// be running the CLI meanwhile), with the optional native hole map helper (a no-op when it is up to date; one line and
// no helper when it cannot be built).
import { execFileSync } from 'node:child_process';

export default function globalSetup() {
  execFileSync(process.execPath, ['scripts/build.js'], { stdio: 'inherit' });
  execFileSync(process.execPath, ['scripts/build-native.js'], { stdio: 'inherit' });
}
