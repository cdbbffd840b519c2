/**
 * Who holds a lock or lease, precisely enough to tell "that process is gone" without waiting for its lease: the
 * host name, the boot id of the machine (/proc/sys/kernel/random/boot_id: new at every boot, and different on two
 * VMs cloned from one template even when they share a host name) and the holder's start time (field 22 of
 * /proc/PID/stat, clock ticks since boot), which tells a pid reused by another process from the holder itself.
 * Containers on one kernel share the boot id, and often the host name (host networking, a fixed --hostname), but
 * each has its own pid namespace, where the holder's pid means nothing to us: so the record also names the holder's
 * pid namespace (/proc/self/ns/pid), and only a holder of our own namespace can be found gone.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

/** The identity fields a lock or lease record carries about its holder (boot and start absent in old records). */
export interface HolderIdentity {
  host: string;
  pid: number;
  /** The holder machine's boot id. */
  boot?: string;
  /** The holder process's start time (ticks since boot, as /proc writes it). */
  start?: string;
  /** The holder's pid namespace (`pid:[inode]`), in which `pid` and `start` mean something. */
  pidns?: string;
}

let cachedBoot: string | null | undefined;

/** This machine's boot id, or null where it cannot be read (not Linux, /proc not mounted). */
export function bootId(): string | null {
  if (cachedBoot === undefined) {
    try {
      const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      cachedBoot = /^[0-9a-f-]{16,64}$/.test(id) ? id : null;
    } catch {
      cachedBoot = null;
    }
  }
  return cachedBoot;
}

let cachedPidNs: string | null | undefined;

/** This process's pid namespace (`pid:[4026531836]`), or null where it cannot be read. */
export function pidNamespace(): string | null {
  if (cachedPidNs === undefined) {
    try {
      const ns = readlinkSync('/proc/self/ns/pid');
      cachedPidNs = /^pid:\[\d+\]$/.test(ns) ? ns : null;
    } catch {
      cachedPidNs = null;
    }
  }
  return cachedPidNs;
}

/** The start time of process `pid` (field 22 of /proc/PID/stat), or null when it cannot be read (gone, hidden). */
export function processStart(pid: number): string | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so fields count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = fields[22 - 3];
  return start !== undefined && /^\d+$/.test(start) ? start : null;
}

/** The identity fields for a record this process writes. */
export function ownIdentity(): HolderIdentity {
  const boot = bootId();
  const start = processStart(process.pid);
  const pidns = pidNamespace();
  return { host: hostname(), pid: process.pid, ...(boot !== null ? { boot } : {}), ...(start !== null ? { start } : {}), ...(pidns !== null ? { pidns } : {}) };
}

/**
 * True only when the holder is certainly a process of this boot of this machine, in our pid namespace, that has
 * ended: same host name, boot id and pid namespace, and its pid is gone or now names a process that started at
 * another time. A record without these fields (an older version's, another system's) is treated as another host's:
 * never gone by this rule.
 */
export function holderGone(r: HolderIdentity): boolean {
  const boot = bootId();
  const pidns = pidNamespace();
  if (r.host !== hostname() || boot === null || r.boot !== boot || typeof r.start !== 'string') return false;
  if (pidns === null || r.pidns !== pidns) return false;
  // Not a pid a record of ours holds (0 and negative ones would name process groups to kill()).
  if (!Number.isSafeInteger(r.pid) || r.pid <= 0) return false;
  try {
    process.kill(r.pid, 0);
  } catch (err) {
    // EPERM: the process exists but belongs to someone else; only ESRCH means it is gone.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
  }
  const start = processStart(r.pid);
  // Alive, or hidden from us (hidepid): a start time we cannot read is not proof that it is another process.
  return start !== null && start !== r.start;
}
