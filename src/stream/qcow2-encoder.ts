/**
 * The QCOW2 encoder: one forward pass laid out `header cluster | refcount table | refcount blocks | L1 | L2 tables |
 * data clusters` (data in ascending guest order; ../shared/design/qcow2-notes.md section 8). Every cluster of the
 * output is referenced exactly once and counted exactly once, so `qemu-img check` finds neither errors nor leaks,
 * and the length is known before the first byte. A delta names its base as backing file (with the backing-format
 * extension) and carries zero flags where the source zeroed what the base may hold, so the base never shows through.
 */
import { DEFAULT_CLUSTER_SIZE } from '../formats/qcow2/create.js';
import { writeEntry } from '../formats/qcow2/l2.js';
import {
  allOnesRefcountBlock,
  clusterBitsOf,
  headerCluster,
  l1SizeFor,
  NEW_REFCOUNT_BITS,
  QEMU_FORMAT_NAMES,
  refcountSpace,
  refcountTable,
} from '../formats/qcow2/new-image.js';
import { normalizeRanges, readPieces, splitRanges, type ByteRange, type ContentSource } from './content.js';
import type { EncodedStream, StreamChunk } from './encoded.js';

/** A run of guest clusters sent one way: as data clusters, or as zero flags. */
interface ClusterRun {
  first: number;
  count: number;
  zero: boolean;
}

/** Options for encodeQcow2. */
export interface Qcow2EncodeOptions {
  /** Cluster size of the output (default 64 KiB, as qemu-img). */
  clusterSize?: number;
  /**
   * Send zeroed clusters as data clusters of zeros, not zero flags: XAPI's qcow2 import (ocaml-qcow's stream
   * decoder) writes only clusters with data and ignores zero flags, which would leave the target's old bytes there.
   */
  zerosAsData?: boolean;
}

/** Encodes `source` as a QCOW2 image: a full disk, or a delta over `source.base` (its backing file). */
export function encodeQcow2(source: ContentSource, opts: Qcow2EncodeOptions = {}): EncodedStream {
  const cs = opts.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const clusterBits = clusterBitsOf(cs, source.name);
  // qemu works in 512-byte sectors: the header says a whole number of them, the tail reads as zeros.
  const size = Math.ceil(source.virtualSize / 512) * 512;
  const runs = planClusters(source, cs, Boolean(opts.zerosAsData));
  const l2PerTable = cs / 8;
  const l1Size = l1SizeFor(size, cs, source.name);
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  const tables = tablesOf(runs, l2PerTable);
  const dataClusters = runs.reduce((n, r) => n + (r.zero ? 0 : r.count), 0);
  const { blocks, tableClusters } = refcountSpace(1 + l1Clusters + tables.length + dataClusters, cs, source.name);
  const firstBlock = 1 + tableClusters;
  const l1At = firstBlock + blocks;
  const firstL2 = l1At + l1Clusters;
  const firstData = firstL2 + tables.length;
  const total = firstData + dataClusters;

  const base = source.base;
  const header = headerCluster(
    {
      clusterBits,
      size,
      l1Size,
      l1TableOffset: l1At * cs,
      refcountTableOffset: cs,
      refcountTableClusters: tableClusters,
      backing: base ? { name: base.backingPath, format: QEMU_FORMAT_NAMES[base.format] } : null,
    },
    source.name,
  );
  const l1 = Buffer.alloc(l1Clusters * cs);
  tables.forEach((ti, k) => l1.writeBigUInt64BE(BigInt((firstL2 + k) * cs) | (1n << 63n), ti * 8));

  return {
    format: 'qcow2',
    length: total * cs,
    async *chunks(): AsyncGenerator<StreamChunk> {
      yield header;
      yield refcountTable(tableClusters, blocks, firstBlock * cs, cs);
      const perBlock = (cs * 8) / NEW_REFCOUNT_BITS;
      const full = blocks > 1 ? allOnesRefcountBlock(0, perBlock, cs) : null;
      for (let b = 0; b < blocks; b++) yield (b + 1) * perBlock <= total && full ? full : allOnesRefcountBlock(b, total, cs);
      yield l1;
      yield* l2Tables(runs, tables, l2PerTable, firstData * cs, cs);
      yield* dataClustersOf(source, runs, cs);
      await source.finish?.();
    },
  };
}

/**
 * Which guest clusters the output holds: every cluster a range touches, as data, except (for a delta) clusters
 * wholly inside the zero ranges, which become zero flags; a full image leaves those out (a new image reads zeros).
 */
function planClusters(source: ContentSource, cs: number, zerosAsData: boolean): ClusterRun[] {
  const size = source.virtualSize;
  const touched = toRuns(source.ranges, (r) => [Math.floor(r.offset / cs), Math.ceil((r.offset + r.length) / cs)]);
  // A zero range covers its last cluster when it reaches the end of the disk (the last cluster may be partial).
  const zero = toRuns(normalizeRanges(source.zeros ?? []), (r) => [Math.ceil(r.offset / cs), r.offset + r.length >= size ? Math.ceil(size / cs) : Math.floor((r.offset + r.length) / cs)]);
  const out: ClusterRun[] = [];
  const push = (first: number, count: number, isZero: boolean) => {
    if (count <= 0 || (isZero && !source.base)) return;
    if (zerosAsData) isZero = false;
    const last = out[out.length - 1];
    if (last && last.zero === isZero && last.first + last.count === first) last.count += count;
    else out.push({ first, count, zero: isZero });
  };
  let zi = 0;
  for (const t of touched) {
    const end = t.first + t.count;
    for (let pos = t.first; pos < end; ) {
      while (zi < zero.length && zero[zi].first + zero[zi].count <= pos) zi++;
      const z = zero[zi];
      const next = z && z.first <= pos ? Math.min(end, z.first + z.count) : Math.min(end, z ? z.first : end);
      push(pos, next - pos, Boolean(z && z.first <= pos));
      pos = next;
    }
  }
  return out;
}

/** Sorted ranges as merged runs of cluster indices [first, end). */
function toRuns(ranges: readonly ByteRange[], span: (r: ByteRange) => [number, number]): ClusterRun[] {
  const out: ClusterRun[] = [];
  for (const r of ranges) {
    const [first, end] = span(r);
    if (end <= first) continue;
    const last = out[out.length - 1];
    if (last && first <= last.first + last.count) last.count = Math.max(last.count, end - last.first);
    else out.push({ first, count: end - first, zero: false });
  }
  return out;
}

/** The L1 indices that need an L2 table, ascending. */
function tablesOf(runs: ClusterRun[], l2PerTable: number): number[] {
  const out: number[] = [];
  for (const r of runs) {
    for (let ti = Math.floor(r.first / l2PerTable); ti <= Math.floor((r.first + r.count - 1) / l2PerTable); ti++) {
      if (out[out.length - 1] !== ti) out.push(ti);
    }
  }
  return out;
}

/** The L2 tables in order: data clusters numbered from `dataStart` in guest order, zero flags for zero runs. */
function* l2Tables(runs: ClusterRun[], tables: number[], l2PerTable: number, dataStart: number, cs: number): Generator<Buffer> {
  const table = Buffer.alloc(cs);
  let host = dataStart;
  let ri = 0;
  for (const ti of tables) {
    table.fill(0);
    const from = ti * l2PerTable;
    const to = from + l2PerTable;
    while (ri < runs.length && runs[ri].first < to) {
      const r = runs[ri];
      const a = Math.max(r.first, from);
      const b = Math.min(r.first + r.count, to);
      for (let c = a; c < b; c++) {
        if (r.zero) writeEntry(table, c - from, null, true);
        else {
          writeEntry(table, c - from, host, false);
          host += cs;
        }
      }
      if (r.first + r.count > to) break;
      ri++;
    }
    yield table;
  }
}

/**
 * The data clusters in guest order. A full image reads only inside the source's ranges (a stream source has nothing
 * else) and sends zeros around them; a delta reads whole clusters, since outside its ranges the content is the base's.
 */
async function* dataClustersOf(source: ContentSource, runs: ClusterRun[], cs: number): AsyncGenerator<StreamChunk> {
  const size = source.virtualSize;
  const data = runs.filter((r) => !r.zero);
  const spans = data.map((r) => ({ offset: r.first * cs, length: Math.min(size, (r.first + r.count) * cs) - r.first * cs }));
  const reads = source.base ? spans : intersect(source.ranges, spans);
  const pieces = readPieces(source, splitRanges(reads));
  let next = await pieces.next();
  for (const r of data) {
    const end = (r.first + r.count) * cs;
    let pos = r.first * cs;
    while (!next.done && next.value.offset < end) {
      const p = next.value;
      if (p.offset > pos) yield p.offset - pos;
      yield p.data;
      pos = p.offset + p.data.length;
      next = await pieces.next();
    }
    if (pos < end) yield end - pos;
  }
  if (!next.done) throw new Error('internal: QCOW2 encoder read past its data clusters');
}

/** The parts of sorted ranges `a` inside sorted spans `b` (each result inside one span). */
function intersect(a: readonly ByteRange[], b: readonly ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  let i = 0;
  for (const s of b) {
    const sEnd = s.offset + s.length;
    while (i < a.length && a[i].offset + a[i].length <= s.offset) i++;
    for (let j = i; j < a.length && a[j].offset < sEnd; j++) {
      const from = Math.max(a[j].offset, s.offset);
      const to = Math.min(a[j].offset + a[j].length, sEnd);
      if (to > from) out.push({ offset: from, length: to - from });
    }
  }
  return out;
}
