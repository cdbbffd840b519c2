/** The manifest's bytes and checksum rule, point ids and `--at`, and the retention rules. */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { parseManifest, serializeManifest, selectKept, resolvePoint, parseTime, type DiskManifest } from '../../../src/repo/index.js';
import { ManifestProblem, emptyManifest } from '../../../src/repo/manifest.js';
import { newPointId } from '../../../src/repo/names.js';

function sample(): DiskManifest {
  const m = emptyManifest('vm1', 'xxh128', 2 << 20);
  m.generation = 4;
  m.points = [
    { id: '20261201T010000Z', time: '2026-12-01T01:00:00.000Z', image: '20261201T010000Z.vhdx', kind: 'full', parent: null, virtualSize: 1 << 30, changedBytes: 5 << 20, source: '/vms/vm1.vhdx' },
    { id: '20261202T010000Z', time: '2026-12-02T01:00:00.000Z', image: '20261202T010000Z.vhdx', kind: 'diff', parent: '20261201T010000Z', virtualSize: 1 << 30, changedBytes: 2 << 20, source: '/vms/vm1.vhdx' },
  ];
  return m;
}

describe('manifest', () => {
  it('round-trips, and its checksum is SHA-256 of the bytes with the digits taken as zeros (as docs/repository.md says)', () => {
    const bytes = serializeManifest(sample());
    expect(parseManifest(bytes)).toEqual(sample());
    const text = bytes.toString('utf8');
    const digits = /"checksum": "sha256:([0-9a-f]{64})"\n\}\n$/.exec(text)![1];
    const zeroed = text.replace(/("checksum": "sha256:)[0-9a-f]{64}/, `$1${'0'.repeat(64)}`);
    expect(createHash('sha256').update(zeroed).digest('hex')).toBe(digits);
  });

  it('refuses every truncation and every changed byte', () => {
    const bytes = serializeManifest(sample());
    for (let n = 0; n < bytes.length; n += 7) expect(() => parseManifest(bytes.subarray(0, n))).toThrow(ManifestProblem);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
        const b = Buffer.from(bytes);
        b[at] ^= x;
        // Whitespace changes keep the JSON meaning but not the bytes: still refused.
        expect(() => parseManifest(b)).toThrow(ManifestProblem);
      }),
    );
  });

  it('refuses parents that are not earlier points and pending steps that name no point and child', () => {
    const m = sample();
    m.points[1].parent = '20261203T010000Z';
    expect(() => parseManifest(serializeManifest(m))).toThrow(/parent that is not an earlier point/);
    const p = sample();
    p.pending = { op: 'fold', drop: '20261202T010000Z', into: '20261201T010000Z' };
    expect(() => parseManifest(serializeManifest(p))).toThrow(/pending fold/);
  });
});

describe('point ids and --at', () => {
  it('ids are the UTC second, made distinct with -N', () => {
    const t = new Date('2026-12-03T03:31:15.600Z');
    expect(newPointId(t, [])).toBe('20261203T033115Z');
    expect(newPointId(t, ['20261203T033115Z', '20261203T033115Z-2'])).toBe('20261203T033115Z-3');
  });

  it('--at takes an id or the newest point at or before a time', () => {
    const pts = sample().points;
    expect(resolvePoint(pts, undefined, 'vm1').id).toBe(pts[1].id);
    expect(resolvePoint(pts, pts[0].id, 'vm1').id).toBe(pts[0].id);
    expect(resolvePoint(pts, '2026-12-01 23:00', 'vm1').id).toBe(pts[0].id);
    expect(resolvePoint(pts, '2026-12-02T01:00:00Z', 'vm1').id).toBe(pts[1].id);
    expect(() => resolvePoint(pts, '2026-11-30', 'vm1')).toThrow(/no restore point at or before/);
    expect(() => resolvePoint(pts, 'yesterday', 'vm1')).toThrow(/neither a restore point id/);
    expect(parseTime('2026-12-03T04:00:00+02:00')!.toISOString()).toBe('2026-12-03T02:00:00.000Z');
  });
});

describe('retention', () => {
  const at = (iso: string, i: number) => ({ id: `p${i}`, time: iso });
  // Three points on Mon 2026-11-30, one on Wed 12-02, two on Mon 12-07 (next ISO week), one on Sun 12-13.
  const pts = ['2026-11-30T01:00:00Z', '2026-11-30T09:00:00Z', '2026-11-30T23:00:00Z', '2026-12-02T10:00:00Z', '2026-12-07T00:30:00Z', '2026-12-07T05:00:00Z', '2026-12-13T22:00:00Z'].map(at);

  it('keeps the newest N, the newest of each recent day and week, and always the newest point', () => {
    expect([...selectKept(pts, { keep: 2 })].sort()).toEqual(['p5', 'p6']);
    expect([...selectKept(pts, { daily: 3 })].sort()).toEqual(['p3', 'p5', 'p6']);
    expect([...selectKept(pts, { weekly: 2 })].sort()).toEqual(['p3', 'p6']);
    expect([...selectKept(pts, { weekly: 5 })].sort()).toEqual(['p3', 'p6']);
    expect([...selectKept(pts, { weekly: 1 })].sort()).toEqual(['p6']);
    expect([...selectKept(pts, { keep: 1, daily: 2 })].sort()).toEqual(['p5', 'p6']);
    expect(selectKept(pts, {}).size).toBe(pts.length);
  });

  it('never keeps more than the rules allow and always the newest (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 60 * 86_400 }), { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }), (offsets, keep, daily) => {
        const sorted = [...offsets].sort((a, b) => a - b).map((s, i) => ({ id: `p${i}`, time: new Date(Date.UTC(2026, 0, 1) + s * 1000).toISOString() }));
        const kept = selectKept(sorted, { keep, daily });
        expect(kept.has(sorted[sorted.length - 1].id)).toBe(true);
        expect(kept.size).toBeLessThanOrEqual(keep + daily);
        for (const p of sorted.slice(-keep)) expect(kept.has(p.id)).toBe(true);
      }),
    );
  });
});
