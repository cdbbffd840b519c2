/**
 * The metafile library: what the sync layer and the CLI use. Format in docs/metafile.md.
 */
export { metafileLocationFor, imageLocationForMetafile, readMetafile, writeMetafile, writableFields, Metafile, METAFILE_SUFFIX, nativeMetafileLength } from './metafile.js';
export { restampList, restampMetafile } from './restamp.js';
export type { EntryView, MetafileLayout, MetafileSummary, NewMetafile, BlockRecord, ReadMetafileOptions } from './metafile.js';
export { hashDisk, hashesDirectly } from './hash-disk.js';
export { hasMagic } from './header.js';
export type { HashOptions, HashedBlock } from './hash-disk.js';
export { createMetafile, resolveHashSettings, describeCreated, DEFAULT_BLOCK_SIZE } from './create.js';
export type { CreateMetafileOptions, CreateMetafileResult } from './create.js';
export { compareMetafiles, changedRanges, assertComparable, blockIndices } from './compare.js';
export type { BlockRange, Comparison } from './compare.js';
export { checkFresh, identityProblem, openFreshMetafile } from './fresh.js';
export { digestBlock, zeroDigest, digestSub, NATIVE_ALGORITHMS } from './hashers.js';
export type { HashAlgorithm, SubAlgorithm } from './hashers.js';
export type { SubLevel } from './header.js';
export type { BlockState, EntryBatch } from './entries.js';
