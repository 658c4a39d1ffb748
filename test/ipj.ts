/**
 * The tests' independent oracle: kernel state as iproute2 itself prints it (`ip -j`), not as
 * Weft's netlink dumps read it, so a test that changes the kernel through Weft reads it back
 * through another implementation.
 */
import { execFileSync } from 'node:child_process';

export interface Link {
  ifindex: number;
  ifname: string;
  address?: string;
  mtu: number;
  flags: string[];
  master?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string; info_slave_data?: Record<string, unknown> };
}

export interface LinkAddrs {
  ifname: string;
  address?: string;
  mtu?: number;
  flags: string[];
  addr_info: { family: 'inet' | 'inet6'; local: string; prefixlen: number }[];
}

export interface Route {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  flags?: string[];
}

export interface Neighbour {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}

export interface FdbEntry {
  mac: string;
  dst?: string;
  ifname?: string;
  flags?: string[];
  state?: string;
}

const NAMED = /^(?:\/var)?\/run\/netns\/([^/]+)$/;

function json<T>(ns: string | undefined, tool: 'ip' | 'bridge', args: string[]): T {
  const named = ns === undefined ? undefined : NAMED.exec(ns)?.[1];
  const argv = ns === undefined ? [tool, '-j', ...args] : named ? [tool, '-n', named, '-j', ...args] : ['nsenter', `--net=${ns}`, tool, '-j', ...args];
  const out = execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return (out.trim() === '' ? [] : JSON.parse(out)) as T;
}

export const links = async (ns: string | undefined): Promise<Link[]> => json(ns, 'ip', ['-d', 'link', 'show']);
export const addrs = async (ns: string | undefined, dev?: string): Promise<LinkAddrs[]> =>
  json(ns, 'ip', dev ? ['addr', 'show', 'dev', dev] : ['addr', 'show']);
export const routes = async (ns: string | undefined, family: '-4' | '-6' = '-4'): Promise<Route[]> =>
  json(ns, 'ip', [family, 'route', 'show', 'table', 'main']);
export const neighbours = async (ns: string | undefined, dev: string): Promise<Neighbour[]> => json(ns, 'ip', ['-4', 'neigh', 'show', 'dev', dev]);
export const fdb = async (ns: string | undefined, dev: string): Promise<FdbEntry[]> => json(ns, 'bridge', ['fdb', 'show', 'dev', dev]);
