import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The version in package.json (two levels above both src/meta and dist/meta); 'unknown' when it is not shipped. */
export function packageVersion(): string {
  if (cached === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
      cached = pkg.version ?? 'unknown';
    } catch {
      // Bundled or relocated builds may not ship package.json; the version is informational only.
      cached = 'unknown';
    }
  }
  return cached;
}

/** `vhdsync <version>`, recorded in metafiles. */
export function toolVersion(): string {
  return `vhdsync ${packageVersion()}`;
}
