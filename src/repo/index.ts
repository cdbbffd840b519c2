/** Backup repositories: restore points, manifests, retention, verify. Layout in docs/repository.md. */
export { openRepository } from './open.js';
export { FileRepository, REPOSITORY_MARKER, MANIFEST_NAME } from './file-backend.js';
export type { RepoBackend, DiskSession, ReflinkMode } from './backend.js';
export { backupDisk, backupMany, type BackupOptions, type BackupSummary, type BackupJob } from './backup.js';
export type { BackupSource, StreamSource } from './source.js';
export { pruneDisk, type PruneSummary } from './prune.js';
export { parseWait, type LockWait } from './wait.js';
export { restorePoint, type RestoreOptions, type RestoreSummary, type StreamTarget } from './restore.js';
export { verifyDisk, type DiskReport, type PointReport } from './verify.js';
export { repairManifest, type RepairSummary } from './repair.js';
export { repairObjectManifest } from './object/object-repair.js';
export { ObjectRepository } from './object/object-backend.js';
export { listRepository, type ListedDisk, type ListedPoint } from './list.js';
export { selectKept, checkPolicy, hasRule, type RetentionPolicy } from './retention.js';
export { checkDiskName, defaultDiskName, resolvePoint, parseTime } from './names.js';
export { parseManifest, serializeManifest, type DiskManifest, type RestorePoint } from './manifest.js';
