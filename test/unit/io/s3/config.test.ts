/**
 * Settings resolution (endpoint, region, path style, credentials, profiles) from the environment and the shared
 * AWS files, without a service: the files are given as text.
 */
import { resolveS3Settings } from '../../../../src/io/s3/config.js';
import { UsageError } from '../../../../src/util/errors.js';

const CONFIG = '/home/u/.aws/config';
const CREDS = '/home/u/.aws/credentials';

function resolve(opts: { profile?: string; pathStyle?: boolean }, env: NodeJS.ProcessEnv, files: Record<string, string> = {}) {
  return resolveS3Settings(opts, { HOME: '/home/u', ...env }, (f) => files[f] ?? null);
}

describe('S3 settings', () => {
  it('takes keys, session token, region and endpoint from the environment; path style follows the endpoint', () => {
    const s = resolve({}, { AWS_ACCESS_KEY_ID: 'AKIDENV', AWS_SECRET_ACCESS_KEY: 'secretenv', AWS_SESSION_TOKEN: 'tok', AWS_REGION: 'eu-west-3', AWS_ENDPOINT_URL: 'http://127.0.0.1:7480/' });
    expect(s).toMatchObject({ region: 'eu-west-3', endpoint: 'http://127.0.0.1:7480', pathStyle: true, credentials: { accessKeyId: 'AKIDENV', secretAccessKey: 'secretenv', sessionToken: 'tok' } });
    expect(s.credentialSource).toBe('AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
  });

  it('defaults to us-east-1, virtual-host style, and no endpoint (AWS)', () => {
    const s = resolve({}, { AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' });
    expect(s).toMatchObject({ region: 'us-east-1', endpoint: undefined, pathStyle: false });
  });

  it('prefers AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL, and AWS_REGION over AWS_DEFAULT_REGION', () => {
    const s = resolve({}, { AWS_ENDPOINT_URL: 'http://general:1', AWS_ENDPOINT_URL_S3: 'https://s3only:2', AWS_DEFAULT_REGION: 'x-1', AWS_REGION: 'y-2' });
    expect(s.endpoint).toBe('https://s3only:2');
    expect(s.region).toBe('y-2');
    expect(resolve({}, { AWS_DEFAULT_REGION: 'x-1' }).region).toBe('x-1');
  });

  it('forces path style on or off with the option', () => {
    expect(resolve({ pathStyle: false }, { AWS_ENDPOINT_URL: 'http://h:1' }).pathStyle).toBe(false);
    expect(resolve({ pathStyle: true }, {}).pathStyle).toBe(true);
  });

  it("reads the default profile's keys from the credentials file and its region from the config file", () => {
    const s = resolve({}, {}, {
      [CREDS]: '# comment\n[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = secretfile\n',
      [CONFIG]: '[default]\nregion = ap-south-1\n',
    });
    expect(s).toMatchObject({ region: 'ap-south-1', credentials: { accessKeyId: 'AKIDFILE', secretAccessKey: 'secretfile' }, profile: 'default' });
    expect(s.credentialSource).toBe(`the keys of profile 'default' in ${CREDS}`);
  });

  it('honours AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE', () => {
    const s = resolve({}, { AWS_CONFIG_FILE: '/etc/c', AWS_SHARED_CREDENTIALS_FILE: '/etc/k' }, {
      '/etc/k': '[default]\naws_access_key_id=K\naws_secret_access_key=S\n',
      '/etc/c': '[default]\nregion=sa-east-1\n',
    });
    expect(s).toMatchObject({ region: 'sa-east-1', credentials: { accessKeyId: 'K' } });
  });

  it('selects a profile by --profile or AWS_PROFILE, with endpoint_url, nested s3 settings and [services]', () => {
    const files = {
      [CONFIG]: [
        '[profile ceph]',
        'region = default',
        'endpoint_url = http://ceph.example:7480',
        'aws_access_key_id = AKIDCEPH',
        'aws_secret_access_key = secretceph',
        '[profile vhost]',
        's3 =',
        '  endpoint_url = https://minio.example',
        '  addressing_style = virtual',
        '[profile svc]',
        'services = local',
        '[services local]',
        's3 =',
        '  endpoint_url = http://localhost:9000',
      ].join('\n'),
    };
    const ceph = resolve({ profile: 'ceph' }, {}, files);
    expect(ceph).toMatchObject({ region: 'default', endpoint: 'http://ceph.example:7480', pathStyle: true, credentials: { accessKeyId: 'AKIDCEPH' }, profile: 'ceph' });
    expect(ceph.credentialSource).toBe(`the keys of profile 'ceph' in ${CONFIG}`);
    const vhost = resolve({}, { AWS_PROFILE: 'vhost' }, files);
    expect(vhost).toMatchObject({ endpoint: 'https://minio.example', pathStyle: false, profile: 'vhost' });
    expect(vhost.credentials).toBeUndefined();
    expect(resolve({ profile: 'svc' }, {}, files).endpoint).toBe('http://localhost:9000');
    // The environment's endpoint overrides the profile's; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS drops both.
    expect(resolve({ profile: 'ceph' }, { AWS_ENDPOINT_URL: 'http://env:1' }, files).endpoint).toBe('http://env:1');
    expect(resolve({ profile: 'ceph' }, { AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: 'true', AWS_ENDPOINT_URL: 'http://env:1' }, files).endpoint).toBeUndefined();
  });

  it('lets --profile win over keys in the environment, but keys in the environment win over AWS_PROFILE', () => {
    const files = { [CREDS]: '[p]\naws_access_key_id = AKIDP\naws_secret_access_key = sp\n' };
    const env = { AWS_ACCESS_KEY_ID: 'AKIDENV', AWS_SECRET_ACCESS_KEY: 'se' };
    expect(resolve({ profile: 'p' }, env, files).credentials?.accessKeyId).toBe('AKIDP');
    expect(resolve({}, { ...env, AWS_PROFILE: 'p' }, files).credentials?.accessKeyId).toBe('AKIDENV');
  });

  it('leaves a profile without static keys (roles, SSO, processes) to the SDK chain, naming it', () => {
    const s = resolve({ profile: 'role' }, {}, { [CONFIG]: '[profile role]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n' });
    expect(s.credentials).toBeUndefined();
    expect(s.profile).toBe('role');
    expect(s.credentialSource).toMatch(/profile 'role'/);
  });

  it('with nothing configured, names what to set', () => {
    const s = resolve({}, {});
    expect(s.credentials).toBeUndefined();
    expect(s.credentialSource).toMatch(/AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile/);
  });

  it('reads AWS_MAX_ATTEMPTS and max_attempts', () => {
    expect(resolve({}, { AWS_MAX_ATTEMPTS: '3' }).maxAttempts).toBe(3);
    expect(resolve({}, {}, { [CONFIG]: '[default]\nmax_attempts = 9\n' }).maxAttempts).toBe(9);
    expect(resolve({}, {}).maxAttempts).toBeUndefined();
  });

  it.each([
    [{ profile: 'nope' }, {}, /no profile 'nope'/],
    [{}, { AWS_PROFILE: 'nope' }, /no profile 'nope'/],
    [{}, { AWS_ENDPOINT_URL: 'localhost:9000' }, /http:\/\/ or https:\/\//],
    [{}, { AWS_ENDPOINT_URL: 'not a url' }, /not a URL/],
    [{}, { AWS_ENDPOINT_URL: 'http://user:pw@h:1' }, /no user name or password/],
    [{}, { AWS_MAX_ATTEMPTS: 'many' }, /number of attempts/],
  ])('refuses %j %j with one line', (opts, env, why) => {
    let err: unknown;
    try {
      resolve(opts, env as NodeJS.ProcessEnv);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).describe()).toMatch(why);
    expect((err as UsageError).describe()).not.toMatch(/pw/);
  });
});
