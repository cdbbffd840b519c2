/** Registers every location scheme beyond local paths; imported once by the CLI and the library entry. */
import './smb/scheme.js';

export { closeAllSmbSessions } from './smb/scheme.js';
