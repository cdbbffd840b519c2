/**
 * Reading a QCOW2 image as a forward-only stream (a pipe, an HTTP body): the header cluster, then the L1 table,
 * the L2 tables and the data clusters in whatever order they lie, as long as each structure comes after the one
 * that points at it (L1 -> L2 -> data). qcow2-to-stdout's layout (header, refcounts, L1, L2 tables, data), which is
 * what XAPI's importer (ocaml-qcow `qcow_stream`) takes, our encoder's, and `qemu-img convert`'s (L2 tables
 * interleaved with the data they map) all qualify. Refcounts are skipped: only the active mapping defines content.
 *
 * Refused: compressed clusters, extended L2 entries, external data files, encryption, images marked corrupt, and
 * anything that points backwards (data before its L2 table, a cluster referenced twice, a table overlapping
 * another). Memory is one cluster, one 4 MiB piece, and a queue of the structures announced but not yet reached,
 * capped at MAX_PENDING entries whatever the header says.
 */
import { hasMagic, INCOMPAT, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, parse as parseHeader, type Qcow2Header } from '../formats/qcow2/header.js';
import { backingName, parse as parseExtensions } from '../formats/qcow2/extensions.js';
import { L1Table } from '../formats/qcow2/l1.js';
import { COMPRESSED, DATA, mapCluster, ZERO, type L2Context } from '../formats/qcow2/l2.js';
import { CorruptImageError, UnsupportedError } from '../util/errors.js';
import type { ByteRange } from './content.js';
import type { ForwardReader } from './forward-reader.js';

/** Structures announced but not yet read (L2 tables plus runs of data clusters); more is refused. */
export const MAX_PENDING = 1 << 20;
/** Data is handed out in pieces of at most this many bytes. */
const PIECE = 4 << 20;
const MIN_HEADER_READ = 512;

/** What the stream's first cluster says. */
export interface Qcow2StreamHead {
  header: Qcow2Header;
  clusterSize: number;
  /** Bytes of the virtual disk, floored to whole sectors as qemu (and our driver) read it. */
  virtualSize: number;
  /** The backing file name of a delta, or null. */
  backing: string | null;
}

/** Reads and checks the header cluster (the first cluster of the stream). */
export async function readQcow2StreamHead(r: ForwardReader): Promise<Qcow2StreamHead> {
  const first = await r.read(MIN_HEADER_READ, 'the QCOW2 header');
  if (!hasMagic(first)) throw new CorruptImageError('not a QCOW2 stream (no QFI\\xfb magic at its start)', r.name);
  const bits = first.readUInt32BE(20);
  if (bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw new CorruptImageError(`header field cluster_bits is ${bits}, outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`, r.name);
  }
  const cs = 2 ** bits;
  const cluster0 = Buffer.concat([first, await r.read(cs - MIN_HEADER_READ, 'the QCOW2 header cluster')]);
  const header = parseHeader(cluster0, r.length ?? Number.MAX_SAFE_INTEGER, r.name);
  const refuse = (what: string) => new UnsupportedError(`${what}: cannot be read as a stream`, r.name);
  if (header.incompatible & INCOMPAT.CORRUPT) throw new CorruptImageError('the image is marked corrupt (incompatible feature bit 1)', r.name);
  if (header.incompatible & INCOMPAT.DATA_FILE) throw refuse('the image keeps its data in an external data file, which is not in the stream');
  if (header.incompatible & INCOMPAT.EXTENDED_L2) throw refuse('the image has extended L2 entries (subclusters)');
  const ext = parseExtensions(cluster0, header, r.name);
  if (ext.dataFile !== null) throw refuse('the image names an external data file');
  return { header, clusterSize: cs, virtualSize: Math.floor(header.size / 512) * 512, backing: backingName(cluster0, header, r.name) };
}

/** A piece of the disk the stream defines: data bytes at a guest offset, or a run the image marks as zeros. */
export type Qcow2StreamPiece = { kind: 'data'; offset: number; data: Buffer } | { kind: 'zero'; offset: number; length: number };

const REFTABLE_ITEM = 0;
const L1_ITEM = 1;
const TABLE_ITEM = 2;
const DATA_ITEM = 3;
/** Refcount table entries: bits 0-8 are reserved, the rest is a cluster-aligned offset. */
const REFTABLE_RESERVED = 0x1ffn;

/** A min-queue of stream positions to visit (by host offset, then kind), in typed arrays that grow on demand. */
class PendingQueue {
  private host = new Float64Array(64);
  private guest = new Float64Array(64);
  private count = new Float64Array(64);
  private kind = new Uint8Array(64);
  size = 0;

  constructor(private readonly subject: string) {}

  push(host: number, guest: number, count: number, kind: number): void {
    if (this.size >= MAX_PENDING) {
      throw new UnsupportedError(`more than ${MAX_PENDING} L2 tables and data runs announced ahead of the stream's position: too fragmented to read in one pass`, this.subject);
    }
    if (this.size === this.host.length) this.grow();
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(host, kind, this.host[p], this.kind[p])) break;
      this.set(i, this.host[p], this.guest[p], this.count[p], this.kind[p]);
      i = p;
    }
    this.set(i, host, guest, count, kind);
  }

  /** The smallest entry, removed. */
  pop(): { host: number; guest: number; count: number; kind: number } {
    const top = { host: this.host[0], guest: this.guest[0], count: this.count[0], kind: this.kind[0] };
    const last = --this.size;
    const [h, g, c, k] = [this.host[last], this.guest[last], this.count[last], this.kind[last]];
    let i = 0;
    for (;;) {
      let m = 2 * i + 1;
      if (m >= last) break;
      if (m + 1 < last && this.less(this.host[m + 1], this.kind[m + 1], this.host[m], this.kind[m])) m++;
      if (!this.less(this.host[m], this.kind[m], h, k)) break;
      this.set(i, this.host[m], this.guest[m], this.count[m], this.kind[m]);
      i = m;
    }
    if (last > 0) this.set(i, h, g, c, k);
    return top;
  }

  peekKind(): number {
    return this.kind[0];
  }

  peekHost(): number {
    return this.host[0];
  }

  /** The data entries as guest byte ranges in host order (the queue is left as it is). */
  dataInHostOrder(): { host: number; guest: number; count: number }[] {
    const out: { host: number; guest: number; count: number }[] = [];
    for (let i = 0; i < this.size; i++) if (this.kind[i] === DATA_ITEM) out.push({ host: this.host[i], guest: this.guest[i], count: this.count[i] });
    return out.sort((a, b) => a.host - b.host);
  }

  private less(h1: number, k1: number, h2: number, k2: number): boolean {
    return h1 < h2 || (h1 === h2 && k1 < k2);
  }

  private set(i: number, h: number, g: number, c: number, k: number): void {
    this.host[i] = h;
    this.guest[i] = g;
    this.count[i] = c;
    this.kind[i] = k;
  }

  private grow(): void {
    const n = Math.min(MAX_PENDING, this.host.length * 2);
    const f = (a: Float64Array) => {
      const b = new Float64Array(n);
      b.set(a);
      return b;
    };
    this.host = f(this.host);
    this.guest = f(this.guest);
    this.count = f(this.count);
    const k = new Uint8Array(n);
    k.set(this.kind);
    this.kind = k;
  }
}

/**
 * Walks a QCOW2 stream after its head: reads the L1 table, each L2 table when the stream reaches it, and hands out
 * the data clusters and zero-flag runs they map, in stream order. Unallocated clusters are not mentioned.
 */
export class Qcow2StreamWalker {
  private readonly queue: PendingQueue;
  private readonly cs: number;
  private readonly l2Entries: number;
  /** Guest clusters that hold any byte of the virtual disk; entries past them are ignored, as qemu does. */
  private readonly guestClusters: number;
  private readonly ctx: L2Context;
  /** L1 and L2 tables announced and not read yet. */
  private tablesPending = 0;

  constructor(
    private readonly r: ForwardReader,
    readonly head: Qcow2StreamHead,
  ) {
    const h = head.header;
    this.cs = head.clusterSize;
    this.l2Entries = this.cs / 8;
    this.guestClusters = Math.ceil(head.virtualSize / this.cs);
    this.ctx = { clusterBits: h.clusterBits, clusterSize: this.cs, extended: false, hasDataFile: false, subject: r.name };
    this.queue = new PendingQueue(r.name);
    // The refcount table is checked, not used (its blocks are not even read): XAPI's importer refuses a table that
    // points outside the image, and so do we. It may lie anywhere (qemu moves it to the end when it grows), so it
    // does not count among the tables that must precede the data.
    this.queue.push(h.refcountTableOffset, 0, (h.refcountTableClusters * this.cs) / 8, REFTABLE_ITEM);
    const l1Needed = Math.ceil(this.guestClusters / this.l2Entries);
    if (l1Needed > 0) {
      this.queue.push(h.l1TableOffset, 0, l1Needed, L1_ITEM);
      this.tablesPending++;
    }
  }

  /**
   * Reads the L1 and every L2 table, which must all come before the first data cluster (qcow2-to-stdout's layout,
   * our encoder's), and returns the guest ranges the data clusters fill, in the order the stream carries them, plus
   * the zero-flag runs. Then `pieces()` hands out only data. For consumers that must know the content up front.
   */
  async readAllTables(): Promise<{ data: ByteRange[]; zeros: ByteRange[] }> {
    const zeros: ByteRange[] = [];
    while (this.tablesPending > 0) {
      if (this.queue.peekKind() === DATA_ITEM) {
        throw new UnsupportedError(
          `a data cluster at byte ${this.queue.peekHost()} comes before the last L2 table: only a stream with all tables before the data (qcow2-to-stdout's layout) can be re-encoded from a pipe; import it into an image instead`,
          this.r.name,
        );
      }
      for (const z of await this.visit(this.queue.pop())) {
        if (zeros.length >= MAX_PENDING) throw new UnsupportedError(`more than ${MAX_PENDING} zero runs: too fragmented to re-encode from a pipe`, this.r.name);
        zeros.push(z);
      }
    }
    const data: ByteRange[] = [];
    for (const d of this.queue.dataInHostOrder()) {
      const range = this.guestRange(d.guest, d.count);
      const last = data[data.length - 1];
      if (last && range.offset < last.offset + last.length) {
        throw new UnsupportedError(`data clusters are not in guest order (guest offset ${range.offset} after ${last.offset}): cannot be re-encoded from a pipe; import it into an image instead`, this.r.name);
      }
      if (last && last.offset + last.length === range.offset) last.length += range.length;
      else data.push(range);
    }
    return { data, zeros };
  }

  /** Hands out the stream's content in stream order, then reads the stream to its end. */
  async *pieces(): AsyncGenerator<Qcow2StreamPiece> {
    const buf = Buffer.allocUnsafeSlow(Math.max(PIECE, this.cs));
    while (this.queue.size > 0) {
      const item = this.queue.pop();
      if (item.kind !== DATA_ITEM) {
        for (const z of await this.visit(item)) yield { kind: 'zero', ...z };
        continue;
      }
      this.behind(item.host, `the data cluster of guest offset ${item.guest * this.cs}`, 'data before its L2 table, or a cluster referenced twice');
      await this.r.skipTo(item.host, `the data cluster of guest offset ${item.guest * this.cs}`);
      const perPiece = Math.floor(buf.length / this.cs);
      for (let done = 0; done < item.count; ) {
        const n = Math.min(perPiece, item.count - done);
        const data = await this.r.read(n * this.cs, `the data cluster of guest offset ${(item.guest + done) * this.cs}`, buf);
        const range = this.guestRange(item.guest + done, n);
        yield { kind: 'data', offset: range.offset, data: data.subarray(0, range.length) };
        done += n;
      }
    }
    // Whatever follows (refcount blocks placed last, padding) is read over so that the body is consumed.
    await this.r.tail(0);
  }

  /** The guest bytes of `count` clusters from `first`, cut at the end of the virtual disk. */
  private guestRange(first: number, count: number): ByteRange {
    const offset = first * this.cs;
    return { offset, length: Math.min(count * this.cs, this.head.virtualSize - offset) };
  }

  /** Refuses a position the stream has already passed. */
  private behind(host: number, what: string, why: string): void {
    if (host < this.r.position) {
      throw new CorruptImageError(`${what} at byte ${host} lies behind the stream's position (${this.r.position}): ${why}; this stream cannot be read in one pass`, this.r.name);
    }
  }

  /** Refuses a structure that would lie past the end of a stream whose length is known. */
  private inside(host: number, bytes: number, what: string): void {
    if (this.r.length !== null && host + bytes > this.r.length) {
      throw new CorruptImageError(`${what} at byte ${host} ends past the end of the stream (${this.r.length} bytes)`, this.r.name);
    }
  }

  /** Reads the refcount, L1 or an L2 table; returns the zero runs an L2 table marks. */
  private async visit(item: { host: number; guest: number; count: number; kind: number }): Promise<ByteRange[]> {
    if (item.kind === REFTABLE_ITEM) {
      await this.checkRefcountTable(item.host, item.count);
      return [];
    }
    this.tablesPending--;
    if (item.kind === L1_ITEM) {
      await this.readL1(item.host, item.count);
      return [];
    }
    return this.readL2(item.host, item.guest);
  }

  /** Checks every refcount table entry: reserved bits clear, cluster aligned, inside the stream when its length is known. */
  private async checkRefcountTable(at: number, entries: number): Promise<void> {
    this.behind(at, 'the refcount table', 'it overlaps the header');
    await this.r.skipTo(at, 'the refcount table');
    const perCluster = this.cs / 8;
    for (let first = 0; first < entries; first += perCluster) {
      const n = Math.min(perCluster, entries - first);
      const bytes = await this.r.read(n * 8, 'the refcount table');
      for (let i = 0; i < n; i++) {
        const e = bytes.readBigUInt64BE(i * 8);
        if (e === 0n) continue;
        const off = Number(e & ~REFTABLE_RESERVED);
        const bad = e & REFTABLE_RESERVED ? 'has reserved bits set' : off % this.cs !== 0 ? 'is not cluster aligned' : this.r.length !== null && off + this.cs > this.r.length ? `points past the end of the stream (${this.r.length} bytes)` : null;
        if (bad) throw new CorruptImageError(`refcount table entry ${first + i} (0x${e.toString(16)}) ${bad}`, this.r.name);
      }
    }
  }

  /** Reads the L1 entries that cover the virtual disk, a cluster at a time, and queues their L2 tables. */
  private async readL1(at: number, entries: number): Promise<void> {
    this.behind(at, 'the L1 table', 'it overlaps the header');
    await this.r.skipTo(at, 'the L1 table');
    const perCluster = this.cs / 8;
    for (let first = 0; first < entries; first += perCluster) {
      const n = Math.min(perCluster, entries - first);
      const bytes = await this.r.read(n * 8, 'the L1 table');
      const l1 = L1Table.parse(bytes, n, this.cs, this.r.length ?? Number.MAX_SAFE_INTEGER, this.r.name);
      for (let i = 0; i < n; i++) {
        const off = l1.l2Offset(i);
        if (off === 0) continue;
        this.queue.push(off, first + i, 1, TABLE_ITEM);
        this.tablesPending++;
      }
    }
  }

  /** Reads one L2 table; queues its data clusters (runs contiguous in both guest and host order). */
  private async readL2(at: number, l1Index: number): Promise<ByteRange[]> {
    const what = `the L2 table of L1 entry ${l1Index}`;
    this.behind(at, what, 'it overlaps the L1 table or another table, or comes before the L1 table');
    await this.r.skipTo(at, what);
    const table = await this.r.read(this.cs, what);
    const zeros: ByteRange[] = [];
    let run: { host: number; guest: number; count: number } | null = null;
    const flush = () => {
      if (!run) return;
      this.inside(run.host, run.count * this.cs, `the data cluster of guest offset ${run.guest * this.cs}`);
      this.queue.push(run.host, run.guest, run.count, DATA_ITEM);
      run = null;
    };
    const firstGuest = l1Index * this.l2Entries;
    const end = Math.min(this.l2Entries, this.guestClusters - firstGuest);
    for (let j = 0; j < end; j++) {
      const vc = firstGuest + j;
      mapCluster(table, j, vc, 0, this.cs, this.ctx, (kind, _length, host) => {
        if (kind === COMPRESSED) {
          throw new UnsupportedError(`the cluster of guest offset ${vc * this.cs} is compressed: a stream reader cannot take compressed clusters (convert the image without -c)`, this.r.name);
        }
        if (kind === ZERO) {
          const z = this.guestRange(vc, 1);
          const last = zeros[zeros.length - 1];
          if (last && last.offset + last.length === z.offset) last.length += z.length;
          else zeros.push(z);
        } else if (kind === DATA) {
          if (run && run.host + run.count * this.cs === host && run.guest + run.count === vc) run.count++;
          else {
            flush();
            run = { host, guest: vc, count: 1 };
          }
        }
      });
    }
    flush();
    return zeros;
  }
}
