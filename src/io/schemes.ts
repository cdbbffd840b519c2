/**
 * Registers every location scheme beyond local paths; imported once by the CLI and the library entry. The SMB
 * client (a few dozen modules) loads on the first smb:// or \\host\share location, so local work never pays
 * for it.
 */
import { registerScheme } from './location.js';
import { isSmbLocation } from './smb/location-syntax.js';

let smb: Promise<typeof import('./smb/scheme.js')> | undefined;

registerScheme({
  matches: isSmbLocation,
  parse: async (text) => (await (smb ??= import('./smb/scheme.js'))).smbScheme.parse(text),
});

/** Logs off and closes every pooled SMB connection (nothing to do when no SMB location was ever used). */
export async function closeAllSmbSessions(): Promise<void> {
  if (smb) await (await smb).closeAllSmbSessions();
}
