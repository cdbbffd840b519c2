import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** `vhdsync <version>` from package.json (two levels above both src/meta and dist/meta), recorded in metafiles. */
export function toolVersion(): string {
  if (cached === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
      cached = `vhdsync ${pkg.version ?? 'unknown'}`;
    } catch {
      // Bundled or relocated builds may not ship package.json; the version is informational only.
      cached = 'vhdsync';
    }
  }
  return cached;
}
