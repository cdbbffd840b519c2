/**
 * The AWS shared configuration files (`~/.aws/config`, `~/.aws/credentials`), as the AWS CLI and SDKs read them:
 * `[section]` headers, `name = value` lines, full-line comments (`#`, `;`), and nested settings, where a line
 * `s3 =` is followed by indented `name = value` lines that belong to it. In the config file a profile's section
 * is `[profile NAME]` (`[default]` for the default one), in the credentials file plain `[NAME]`.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';

/** A section: its plain settings, and its nested groups (`s3 = ...`) by name. */
export interface IniSection {
  values: Map<string, string>;
  nested: Map<string, Map<string, string>>;
}

/** Parses one file's text into sections by their header (`profile dev`, `default`, `services local`). */
export function parseIni(text: string): Map<string, IniSection> {
  const sections = new Map<string, IniSection>();
  let current: IniSection | null = null;
  let group: Map<string, string> | null = null;
  for (const raw of text.split(/\r?\n/)) {
    if (/^\s*([#;].*)?$/.test(raw)) continue;
    const header = /^\s*\[\s*([^\]]*?)\s*\]\s*$/.exec(raw);
    if (header) {
      const name = header[1].replace(/\s+/g, ' ');
      current = sections.get(name) ?? { values: new Map(), nested: new Map() };
      sections.set(name, current);
      group = null;
      continue;
    }
    if (!current) continue;
    const kv = /^(\s*)([^=\s][^=]*?)\s*=\s*(.*?)\s*$/.exec(raw);
    if (!kv) continue;
    const [, indent, name, value] = kv;
    const key = name.toLowerCase();
    if (indent && group) {
      group.set(key, value);
    } else if (value === '') {
      group = new Map();
      current.nested.set(key, group);
    } else {
      group = null;
      current.values.set(key, value);
    }
  }
  return sections;
}

/** Where the two files are: AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE, else under ~/.aws. */
export function sharedFilePaths(env: NodeJS.ProcessEnv): { config: string; credentials: string } {
  const home = env.HOME || homedir();
  return {
    config: env.AWS_CONFIG_FILE || path.join(home, '.aws', 'config'),
    credentials: env.AWS_SHARED_CREDENTIALS_FILE || path.join(home, '.aws', 'credentials'),
  };
}

/** A file's text, or null when it does not exist (or cannot be read: the AWS tools skip such files too). */
export function readOptional(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** The two files' sections for one profile: config's `[profile NAME]` (or `[default]`), credentials' `[NAME]`. */
export function profileSections(
  config: Map<string, IniSection>,
  credentials: Map<string, IniSection>,
  profile: string,
): { config?: IniSection; credentials?: IniSection } {
  const inConfig = config.get(`profile ${profile}`) ?? (profile === 'default' ? config.get('default') : undefined);
  return { config: inConfig, credentials: credentials.get(profile) };
}
