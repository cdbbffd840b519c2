/**
 * A QCOW2 writer in Python, independent of our encoder, in qcow2-to-stdout's sequential layout (header cluster,
 * refcount table, refcount blocks, L1, L2 tables, data clusters in guest order; all-zero clusters left out), and
 * broken variants of it for the stream decoder's refusals. Written for the tests from the qcow2 specification.
 */
import { execFileSync } from 'node:child_process';

/** What the writer can break. */
export type Qcow2StdoutVariant =
  | 'ok'
  /** The data clusters come before the L2 tables that map them. */
  | 'data-before-l2'
  /** The first mapped cluster is marked compressed. */
  | 'compressed'
  /** The second mapped cluster points back at the L1 table. */
  | 'l2-backwards'
  /** Two L2 entries point at the same data cluster. */
  | 'duplicate'
  /** cluster_bits 30 in the header. */
  | 'huge-cluster-bits'
  /** The refcount table points far past the end of the image. */
  | 'refcount-outside'
  /** l1_size 0x7fffffff. */
  | 'huge-l1'
  /** Extended L2 entries announced in the header. */
  | 'extended-l2'
  /** Valid, with the refcount table and blocks after the data (where qemu moves them when they grow). */
  | 'refcount-last';

const SCRIPT = String.raw`
import struct, sys
src, out, bits, variant = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = open(src, 'rb').read()
size = len(data)
cs = 1 << bits
clusters = (size + cs - 1) // cs
used = [i for i in range(clusters) if any(data[i * cs:(i + 1) * cs])]
per_l2 = cs // 8
l1_size = (clusters + per_l2 - 1) // per_l2
l1_clusters = max(1, (l1_size * 8 + cs - 1) // cs)
tables = sorted(set(i // per_l2 for i in used))
per_block = cs * 8 // 16
blocks = 1
while True:
    total = 2 + blocks + l1_clusters + len(tables) + len(used)
    need = (total + per_block - 1) // per_block
    if need <= blocks:
        break
    blocks = need
assert blocks <= cs // 8
rt_at, rb_at = 1, 2
l1_at = 1 if variant == 'refcount-last' else 2 + blocks
if variant == 'data-before-l2':
    data_at = l1_at + l1_clusters
    l2_at = data_at + len(used)
else:
    l2_at = l1_at + l1_clusters
    data_at = l2_at + len(tables)
if variant == 'refcount-last':
    rt_at = data_at + len(used)
    rb_at = rt_at + 1
COPIED = 1 << 63
host = {c: (data_at + k) * cs for k, c in enumerate(used)}
l2_of = {t: (l2_at + k) * cs for k, t in enumerate(tables)}
if variant == 'duplicate' and len(used) > 1:
    host[used[1]] = host[used[0]]
if variant == 'l2-backwards' and len(used) > 1:
    host[used[1]] = l1_at * cs
header = bytearray(cs)
struct.pack_into('>4sIQIIQIIQQIIQQQQII', header, 0, b'QFI\xfb', 3, 0, 0, 30 if variant == 'huge-cluster-bits' else bits, size, 0,
                 0x7fffffff if variant == 'huge-l1' else l1_size, l1_at * cs, rt_at * cs, 1, 0, 0,
                 16 if variant == 'extended-l2' else 0, 0, 0, 4, 104)
reftable = bytearray(cs)
for b in range(blocks):
    struct.pack_into('>Q', reftable, b * 8, (rb_at + b) * cs)
if variant == 'refcount-outside':
    struct.pack_into('>Q', reftable, 8, 1 << 45)
refblocks = bytearray(blocks * cs)
for c in range(total):
    struct.pack_into('>H', refblocks, c * 2, 1)
l1 = bytearray(l1_clusters * cs)
for t in tables:
    struct.pack_into('>Q', l1, t * 8, l2_of[t] | COPIED)
l2s = bytearray(len(tables) * cs)
for c in used:
    k = tables.index(c // per_l2)
    e = host[c] | COPIED
    if variant == 'compressed' and c == used[0]:
        e = (1 << 62) | host[c]
    struct.pack_into('>Q', l2s, k * cs + (c % per_l2) * 8, e)
body = b''.join(data[c * cs:(c + 1) * cs].ljust(cs, b'\0') for c in used)
with open(out, 'wb') as f:
    f.write(header)
    if variant != 'refcount-last':
        f.write(reftable); f.write(refblocks)
    f.write(l1)
    if variant == 'data-before-l2':
        f.write(body); f.write(l2s)
    else:
        f.write(l2s); f.write(body)
    if variant == 'refcount-last':
        f.write(reftable); f.write(refblocks)
`;

/** Writes `raw`'s content as a QCOW2 image in qcow2-to-stdout's layout (or a broken variant) to `out`. */
export function qcow2Stdout(raw: string, out: string, clusterBits: number, variant: Qcow2StdoutVariant = 'ok'): void {
  execFileSync('python3', ['-c', SCRIPT, raw, out, String(clusterBits), variant], { stdio: ['ignore', 'ignore', 'pipe'] });
}
