import { closeSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { writeFileAtomic, isAtomicTemp } from '../../util/file.js';
import { flockExclusive, funlock } from './flock.js';

/** host-local writes `<id>\r\n<ifname>`; versions before 0.8 wrote only `<id>`. */
const LINE_BREAK = '\r\n';
const TEMP_PREFIX = '.weft-tmp-';

export interface Reservation {
  ip: string;
  containerId: string;
  ifname: string;
}

const chains = new Map<string, Promise<unknown>>();

/**
 * The IPAM state of one network, in host-local's on-disk layout: a file per reserved IP named by the
 * IP, `last_reserved_ip.<rangeset>`, and `lock`, taken with flock. Either plugin reads the other's.
 */
export class DiskStore {
  constructor(readonly dir: string) {}

  /**
   * Runs `fn` holding the lock: an in-process queue first (one served process handles many requests,
   * and flock would not block between its own descriptors on one thread), then flock for other processes.
   */
  async locked<T>(fn: () => T): Promise<T> {
    const prev = chains.get(this.dir) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(async () => {
        mkdirSync(this.dir, { recursive: true, mode: 0o755 });
        const fd = openSync(join(this.dir, 'lock'), 'a');
        try {
          await flockExclusive(fd);
          this.removeStaleTemps();
          return fn();
        } finally {
          funlock(fd);
          closeSync(fd);
        }
      });
    chains.set(this.dir, next);
    try {
      return await next;
    } finally {
      if (chains.get(this.dir) === next) chains.delete(this.dir);
    }
  }

  /**
   * Reserves `ip` for the attachment unless someone holds it. The file appears whole (written aside,
   * then hard-linked into place), so a kill -9 never leaves a reservation without its owner.
   */
  reserve(ip: string, containerId: string, ifname: string, rangeset: number): boolean {
    const temp = join(this.dir, `${TEMP_PREFIX}${process.pid}-${ip}`);
    writeFileSync(temp, `${containerId}${LINE_BREAK}${ifname}`);
    try {
      linkSync(temp, join(this.dir, ip));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    } finally {
      unlinkSync(temp);
    }
    // A hint for the next search, not a reservation (host-local does not sync it either).
    writeFileAtomic(join(this.dir, `last_reserved_ip.${rangeset}`), ip, { durable: false });
    return true;
  }

  lastReserved(rangeset: number): string | undefined {
    try {
      return readFileSync(join(this.dir, `last_reserved_ip.${rangeset}`), 'utf8').trim();
    } catch {
      return undefined;
    }
  }

  isReserved(ip: string): boolean {
    try {
      readFileSync(join(this.dir, ip));
      return true;
    } catch {
      return false;
    }
  }

  list(): Reservation[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: Reservation[] = [];
    for (const name of names) {
      if (!isIP(name)) continue;
      let text: string;
      try {
        text = readFileSync(join(this.dir, name), 'utf8');
      } catch {
        continue;
      }
      const [containerId = '', ifname = ''] = text.trim().split(LINE_BREAK);
      out.push({ ip: name, containerId: containerId.trim(), ifname: ifname.trim() });
    }
    return out;
  }

  byAttachment(containerId: string, ifname: string): Reservation[] {
    return this.list().filter((r) => r.containerId === containerId && (r.ifname === ifname || r.ifname === ''));
  }

  release(ip: string): void {
    try {
      unlinkSync(join(this.dir, ip));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  /** Temp files are written only under the lock, so any found while holding it belong to a killed writer. */
  private removeStaleTemps(): void {
    for (const name of readdirSync(this.dir)) {
      if (name.startsWith(TEMP_PREFIX) || isAtomicTemp(name)) unlinkSync(join(this.dir, name));
    }
  }
}
