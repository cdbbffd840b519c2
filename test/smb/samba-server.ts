/** Starts and stops a private smbd through scripts/samba/samba.sh for one test file. */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { haveTool, requireTool } from '../helpers/tools.js';
import { makeTempDir } from '../helpers/tmp.js';
import { SmbClient, type SmbServerOptions } from '../../src/io/smb/client.js';
import { SmbStore } from '../../src/io/smb/store.js';

const SCRIPT = path.resolve('scripts/samba/samba.sh');
export const USER = 'vhdsynctest';
export const PASSWORD = 'Secret-Pass1';

/** smbd can run here: installed, and we are root (it needs to switch users). */
export function haveSamba(): boolean {
  const ok = haveTool('smbd') && haveTool('smbclient') && process.getuid?.() === 0;
  return requireTool(ok, 'smbd and smbclient (apt-get install samba smbclient; tests run as root)');
}

/** A port nobody listens on right now. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface SambaOptions {
  minProtocol?: string;
  maxProtocol?: string;
  signing?: 'mandatory' | 'auto' | 'disabled';
  encrypt?: 'required' | 'desired' | 'default' | 'off';
  aio?: boolean;
  /** Samba's `smb2 max credits`: the most credits it grants a connection (default 8192). */
  maxCredits?: number;
}

/** A running private smbd. */
export class SambaServer {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly args: string[],
    private readonly cleanup: () => void,
  ) {}

  static async start(opts: SambaOptions = {}): Promise<SambaServer> {
    const { dir, cleanup } = makeTempDir('vhdsync-samba-');
    const args = ['--min-protocol', opts.minProtocol ?? 'SMB2_02', '--max-protocol', opts.maxProtocol ?? 'SMB3_11'];
    args.push('--signing', opts.signing ?? 'auto', '--encrypt', opts.encrypt ?? 'default', '--aio', opts.aio === false ? 'off' : 'on');
    if (opts.maxCredits !== undefined) args.push('--max-credits', String(opts.maxCredits));
    const server = new SambaServer(dir, await freePort(), args, cleanup);
    server.restart();
    return server;
  }

  /** (Re)starts smbd with the same configuration, port and share contents. */
  restart(): void {
    execFileSync(SCRIPT, ['start', this.dir, String(this.port), ...this.args], { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /** Kills smbd (the share's files stay). */
  kill(): void {
    execFileSync(SCRIPT, ['stop', this.dir], { stdio: 'ignore' });
  }

  /** The share's directory on this machine: the oracle for what the server stored. */
  get shareDir(): string {
    return path.join(this.dir, 'share');
  }

  client(extra: Partial<SmbServerOptions> = {}): SmbClient {
    return new SmbClient({ host: '127.0.0.1', port: this.port, credentials: { user: USER, password: PASSWORD, domain: '' }, ...extra });
  }

  store(client: SmbClient, share = 'share'): SmbStore {
    return new SmbStore(client, share, `smb://${USER}@127.0.0.1:${this.port}/${share}`);
  }

  stop(): void {
    if (existsSync(this.dir)) {
      this.kill();
      this.cleanup();
    }
  }
}
