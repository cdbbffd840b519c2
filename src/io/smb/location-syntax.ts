/** Whether a location string names an SMB file (`smb://...` or `\\host\share\...`); loads nothing of the client. */
export function isSmbLocation(text: string): boolean {
  return /^smb:\/\//i.test(text) || text.startsWith('\\\\');
}
