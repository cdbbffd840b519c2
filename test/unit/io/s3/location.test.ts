/** `s3://BUCKET/PREFIX` parsing: bucket name rules, prefix normalisation, refusals as UsageError. */
import fc from 'fast-check';
import { bucketNameProblem, formatS3Location, isS3Location, parseS3Location } from '../../../../src/io/s3/location-syntax.js';
import { UsageError } from '../../../../src/util/errors.js';

describe('s3:// locations', () => {
  it('splits bucket and prefix, normalising slashes', () => {
    expect(parseS3Location('s3://backups')).toEqual({ bucket: 'backups', prefix: '' });
    expect(parseS3Location('s3://backups/')).toEqual({ bucket: 'backups', prefix: '' });
    expect(parseS3Location('S3://backups/host1/vms/')).toEqual({ bucket: 'backups', prefix: 'host1/vms' });
    expect(parseS3Location('s3://backups//host1///vms')).toEqual({ bucket: 'backups', prefix: 'host1/vms' });
    expect(parseS3Location('s3://my.bucket-1/a b/ü')).toEqual({ bucket: 'my.bucket-1', prefix: 'a b/ü' });
  });

  it('recognises the scheme only', () => {
    expect(isS3Location('s3://b')).toBe(true);
    expect(isS3Location('S3://b')).toBe(true);
    expect(isS3Location('s3:/b')).toBe(false);
    expect(isS3Location('/tmp/s3://b')).toBe(false);
    expect(isS3Location('smb://h/s')).toBe(false);
  });

  it.each([
    ['s3://', /no bucket/],
    ['s3:///prefix', /no bucket/],
    ['s3://ab', /3 to 63/],
    ['s3://' + 'a'.repeat(64), /3 to 63/],
    ['s3://Backups', /lower-case/],
    ['s3://under_score', /lower-case/],
    ['s3://-dash', /starts and ends/],
    ['s3://dash-', /starts and ends/],
    ['s3://a..b', /two dots/],
    ['s3://192.168.1.10', /IP address/],
    ['s3://b-ok/x/../y', /'\.\.' segment/],
    ['s3://b-ok/./y', /'\.' segment/],
    ['s3://b-ok/x\ny', /control characters/],
    ['s3://b-ok/' + 'p'.repeat(600), /longer than 512/],
  ])('refuses %j', (text, why) => {
    let err: unknown;
    try {
      parseS3Location(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).describe()).toMatch(why);
    expect((err as UsageError).describe()).not.toMatch(/\n/);
  });

  it('formats what it parsed, and parsing the format is a fixed point', () => {
    const segment = fc.stringMatching(/^[a-z0-9._~ -]{1,12}$/).filter((s) => s !== '.' && s !== '..');
    const bucket = fc.stringMatching(/^[a-z0-9][a-z0-9-]{1,20}[a-z0-9]$/);
    fc.assert(
      fc.property(bucket, fc.array(segment, { maxLength: 5 }), fc.array(fc.nat(3), { maxLength: 6 }), (b, segs, slashes) => {
        // Any number of extra slashes anywhere gives the same store.
        const sep = (i: number) => '/'.repeat(1 + (slashes[i] ?? 0));
        const text = `s3://${b}${segs.map((s, i) => sep(i) + s).join('')}${segs.length ? sep(segs.length) : ''}`;
        const loc = parseS3Location(text);
        expect(loc).toEqual({ bucket: b, prefix: segs.join('/') });
        expect(parseS3Location(formatS3Location(loc))).toEqual(loc);
        expect(bucketNameProblem(b)).toBeNull();
      }),
    );
  });
});
