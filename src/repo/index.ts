/** Backup repositories: restore points, manifests, retention, verify. Layout in docs/repository.md. */
export { openRepository } from './open.js';
export { FileRepository, REPOSITORY_MARKER, MANIFEST_NAME } from './file-backend.js';
export type { RepoBackend, DiskSession, ReflinkMode } from './backend.js';
export { backupDisk, backupMany, type BackupOptions, type BackupSummary, type BackupJob } from './backup.js';
export { pruneDisk, type PruneSummary } from './prune.js';
export { restorePoint, type RestoreOptions, type RestoreSummary } from './restore.js';
export { verifyDisk, type DiskReport, type PointReport } from './verify.js';
export { listRepository, type ListedDisk, type ListedPoint } from './list.js';
export { selectKept, checkPolicy, hasRule, type RetentionPolicy } from './retention.js';
export { checkDiskName, defaultDiskName, resolvePoint, parseTime } from './names.js';
export { parseManifest, serializeManifest, type DiskManifest, type RestorePoint } from './manifest.js';
