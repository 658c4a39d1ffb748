import { inNetns, run, type Netns } from './exec.js';

/** A neighbour (ARP) entry as `ip -j neigh show` prints it. */
export interface Neighbour {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}

/** A forwarding-database entry as `bridge -j fdb show` prints it (VXLAN devices: MAC → remote VTEP). */
export interface FdbEntry {
  mac: string;
  dst?: string;
  ifname?: string;
  flags?: string[];
  state?: string;
  master?: string;
}

async function json<T>(argv: string[]): Promise<T[]> {
  const { stdout } = await run(argv);
  return (stdout.trim() === '' ? [] : JSON.parse(stdout)) as T[];
}

/** IPv4 neighbours of `dev`. */
export const neighbours = (ns: Netns, dev: string): Promise<Neighbour[]> =>
  json<Neighbour>(inNetns(ns, 'ip', ['-j', '-4', 'neigh', 'show', 'dev', dev]));

/** FDB entries of `dev`. */
export const fdb = (ns: Netns, dev: string): Promise<FdbEntry[]> => json<FdbEntry>(inNetns(ns, 'bridge', ['-j', 'fdb', 'show', 'dev', dev]));
