import { readFileSync } from 'node:fs';
import { inNetns, run, type Netns } from './exec.js';

export interface Link {
  ifindex: number;
  ifname: string;
  address?: string;
  mtu: number;
  flags: string[];
  master?: string;
  ifalias?: string;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string; info_slave_data?: Record<string, unknown> };
}

export interface AddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
}

export interface LinkAddrs {
  ifname: string;
  address?: string;
  mtu?: number;
  flags: string[];
  addr_info: AddrInfo[];
}

export interface Route {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  flags?: string[];
  table?: string;
}

async function ipJson<T>(ns: Netns, args: string[]): Promise<T> {
  const { stdout } = await run(inNetns(ns, 'ip', ['-j', ...args]));
  return (stdout.trim() === '' ? [] : JSON.parse(stdout)) as T;
}

export const links = (ns: Netns): Promise<Link[]> => ipJson(ns, ['-d', 'link', 'show']);
export const addrs = (ns: Netns, dev?: string): Promise<LinkAddrs[]> =>
  ipJson(ns, dev ? ['addr', 'show', 'dev', dev] : ['addr', 'show']);
export const routes = (ns: Netns, family: '-4' | '-6' = '-4', table = 'main'): Promise<Route[]> =>
  ipJson(ns, [family, 'route', 'show', 'table', table]);

/** Interface names in this process's own namespace, without an exec (/proc/self/net is per-namespace). */
export function localLinkNames(): Set<string> {
  const text = readFileSync('/proc/self/net/dev', 'utf8');
  return new Set(
    text
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]!.trim())
      .filter(Boolean),
  );
}

export { fdb, neighbours, type FdbEntry, type Neighbour } from './neigh.js';
export { nftTable, type NftChain, type NftRule, type NftTable } from './nft.js';
