import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AddressError, contains, formatAddr, formatNetwork, lastAddr, parseAddr, parseCidr, type Cidr } from '../../ip/cidr.js';
import { parseSubnetEnv, SubnetEnvError, type SubnetEnv } from '../../subnet/env.js';
import { Code, CniError, type Attachment, type DNS, type IPConfig, type Result, type RouteEntry } from '../spec.js';
import { DiskStore, type Reservation } from './disk.js';

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';
export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

interface Range {
  subnet: Cidr;
  start: bigint;
  end: bigint;
  gateway?: bigint;
}

/** host-local's configuration, plus `subnetFile` for a node whose subnet comes from the agent. */
export interface IpamConfig {
  rangesets: Range[][];
  routes: RouteEntry[];
  dataDir: string;
  dns?: DNS;
}

type RawRange = { subnet?: unknown; rangeStart?: unknown; rangeEnd?: unknown; gateway?: unknown };

/** Reads subnet.env the way flannel's CNI plugin does; a missing or bad file is code 50 (not available). */
export function readSubnetFile(path: string): SubnetEnv {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CniError(
      Code.NotAvailable,
      `cannot read the subnet file ${path}: ${(e as Error).message}`,
      'start the weft agent on this node (it writes the file), or set "subnetFile" or an "ipam" section',
    );
  }
  try {
    return parseSubnetEnv(text, path);
  } catch (e) {
    if (e instanceof SubnetEnvError) throw new CniError(Code.NotAvailable, e.message);
    throw e;
  }
}

export function parseIpamConfig(ipam: Record<string, unknown>, networkName: string): IpamConfig {
  const dataDir = join(typeof ipam.dataDir === 'string' ? ipam.dataDir : DEFAULT_DATA_DIR, networkName);
  let raw: RawRange[][];
  let routes: unknown = ipam.routes;
  if (Array.isArray(ipam.ranges)) {
    raw = ipam.ranges as RawRange[][];
  } else if (ipam.subnet !== undefined) {
    raw = [[{ subnet: ipam.subnet, rangeStart: ipam.rangeStart, rangeEnd: ipam.rangeEnd, gateway: ipam.gateway }]];
  } else {
    const env = readSubnetFile(typeof ipam.subnetFile === 'string' ? ipam.subnetFile : DEFAULT_SUBNET_FILE);
    raw = [[{ subnet: formatNetwork(env.subnet), gateway: formatAddr({ family: 4, value: env.subnet.ip }) }]];
    routes ??= [{ dst: formatNetwork(env.network) }];
  }
  if (raw.length === 0 || raw.some((set) => !Array.isArray(set) || set.length === 0)) {
    throw new CniError(Code.InvalidConfig, 'ipam.ranges must be a non-empty list of non-empty range lists', 'e.g. "ranges": [[{"subnet": "10.244.1.0/24"}]]');
  }
  const rangesets = raw.map((set, i) => set.map((r, j) => parseRange(r, `ipam.ranges[${i}][${j}]`)));
  const config: IpamConfig = { rangesets, routes: parseRoutes(routes), dataDir };
  if (typeof ipam.resolvConf === 'string') config.dns = readResolvConf(ipam.resolvConf);
  return config;
}

function parseRange(r: RawRange, where: string): Range {
  const field = (name: keyof RawRange, parse: (s: string) => bigint): bigint | undefined => {
    const v = r[name];
    if (v === undefined || v === '') return undefined;
    try {
      if (typeof v !== 'string') throw new AddressError('not a string');
      return parse(v);
    } catch (e) {
      throw new CniError(Code.InvalidConfig, `${where}.${name} ${JSON.stringify(v)} is invalid: ${(e as Error).message}`);
    }
  };
  if (typeof r.subnet !== 'string')
    throw new CniError(Code.InvalidConfig, `${where}.subnet is missing`, 'give the range a subnet in CIDR form, e.g. 10.244.1.0/24');
  let subnet: Cidr;
  try {
    subnet = parseCidr(r.subnet);
  } catch (e) {
    throw new CniError(Code.InvalidConfig, `${where}.subnet is invalid: ${(e as Error).message}`);
  }
  const last = lastAddr(subnet);
  const addr = (s: string) => {
    const a = parseAddr(s);
    if (!contains(subnet, a)) throw new AddressError(`it is outside ${formatNetwork(subnet)}`);
    return a.value;
  };
  const gateway = field('gateway', addr) ?? subnet.base + 1n;
  const start = field('rangeStart', addr) ?? subnet.base + 1n;
  const end = field('rangeEnd', addr) ?? (subnet.family === 4 ? last - 1n : last);
  if (start > end) throw new CniError(Code.InvalidConfig, `${where}: rangeStart is after rangeEnd`);
  return { subnet, start, end, gateway };
}

function parseRoutes(raw: unknown): RouteEntry[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw new CniError(Code.InvalidConfig, 'ipam.routes must be a list of {"dst": CIDR, "gw": IP}');
  return raw.map((r: RouteEntry, i) => {
    try {
      parseCidr(String(r.dst));
      if (r.gw !== undefined) parseAddr(r.gw);
    } catch (e) {
      throw new CniError(Code.InvalidConfig, `ipam.routes[${i}] is invalid: ${(e as Error).message}`);
    }
    return r.gw ? { dst: r.dst, gw: r.gw } : { dst: r.dst };
  });
}

function readResolvConf(path: string): DNS {
  const dns: DNS = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const [key, ...vals] = line.trim().split(/\s+/);
    if (key === 'nameserver' && vals[0]) (dns.nameservers ??= []).push(vals[0]);
    else if (key === 'domain' && vals[0]) dns.domain = vals[0];
    else if (key === 'search') dns.search = vals;
    else if (key === 'options') (dns.options ??= []).push(...vals);
  }
  return dns;
}

const rangeName = (set: Range[]) =>
  set
    .map(
      (r) => `${formatNetwork(r.subnet)} (${formatAddr({ family: r.subnet.family, value: r.start })}-${formatAddr({ family: r.subnet.family, value: r.end })})`,
    )
    .join(', ');

/**
 * host-local's allocation: one address per range set, round-robin from the last reserved one, the
 * gateway skipped. Everything it reserved is released again if a later range set is full.
 */
export async function allocate(config: IpamConfig, att: Attachment): Promise<Result> {
  const store = new DiskStore(config.dataDir);
  const ips = await store.locked(() => {
    const held = store.byAttachment(att.containerID, att.ifname);
    if (held.length > 0) {
      throw new CniError(
        Code.InvalidConfig,
        `${held.map((r) => r.ip).join(', ')} is already allocated to ${att.containerID}/${att.ifname}`,
        'duplicate allocation is not allowed; DEL the attachment first',
      );
    }
    const taken = new Set(store.list().map((r) => r.ip));
    const out: IPConfig[] = [];
    for (const [idx, set] of config.rangesets.entries()) {
      const ip = pick(set, taken, store.lastReserved(idx));
      if (!ip || !store.reserve(ip.text, att.containerID, att.ifname, idx)) {
        for (const got of out) store.release(got.address.split('/')[0]!);
        throw new CniError(Code.RangeFull, `no free address left in range ${rangeName(set)}`, 'widen the range, or delete pods that no longer run (DEL or GC)');
      }
      out.push({
        address: `${ip.text}/${ip.range.subnet.prefix}`,
        ...(ip.range.gateway !== undefined ? { gateway: formatAddr({ family: ip.range.subnet.family, value: ip.range.gateway }) } : {}),
      });
    }
    return out;
  });
  const result: Result = { cniVersion: '1.1.0', ips, routes: config.routes };
  if (config.dns) result.dns = config.dns;
  return result;
}

function pick(set: Range[], taken: Set<string>, last: string | undefined): { text: string; range: Range } | undefined {
  const lastValue = last ? safeAddr(last) : undefined;
  const total = set.reduce((n, r) => n + (r.end - r.start + 1n), 0n);
  // Walk every address once, starting after the last reserved one (host-local's round-robin).
  let startAt = 0;
  let offset = 0n;
  for (const [i, r] of set.entries()) {
    if (lastValue !== undefined && lastValue >= r.start && lastValue <= r.end) {
      startAt = i;
      offset = lastValue - r.start + 1n;
    }
  }
  for (let n = 0n, i = startAt, v = set[startAt]!.start + offset; n < total; n++) {
    if (v > set[i]!.end) {
      i = (i + 1) % set.length;
      v = set[i]!.start;
    }
    const range = set[i]!;
    const text = formatAddr({ family: range.subnet.family, value: v });
    if (v !== range.gateway && !taken.has(text)) return { text, range };
    v++;
  }
  return undefined;
}

function safeAddr(text: string): bigint | undefined {
  try {
    return parseAddr(text).value;
  } catch {
    return undefined;
  }
}

/** Releases every address the attachment holds; a second release finds nothing and succeeds. */
export async function release(dataDir: string, att: Attachment): Promise<string[]> {
  const store = new DiskStore(dataDir);
  return store.locked(() => {
    const held = store.byAttachment(att.containerID, att.ifname);
    for (const r of held) store.release(r.ip);
    return held.map((r) => r.ip);
  });
}

/** Frees every reservation not in `valid` (CNI GC). Returns what it freed. */
export async function collect(dataDir: string, valid: Attachment[]): Promise<Reservation[]> {
  const store = new DiskStore(dataDir);
  const keep = new Set(valid.map((a) => `${a.containerID}\n${a.ifname}`));
  return store.locked(() => {
    const stale = store
      .list()
      .filter((r) => !keep.has(`${r.containerId}\n${r.ifname}`) && !(r.ifname === '' && valid.some((a) => a.containerID === r.containerId)));
    for (const r of stale) store.release(r.ip);
    return stale;
  });
}

/** CHECK: the attachment still holds every address of `ips`. */
export function verify(dataDir: string, att: Attachment, ips: IPConfig[]): void {
  const held = new Set(new DiskStore(dataDir).byAttachment(att.containerID, att.ifname).map((r) => r.ip));
  for (const ip of ips) {
    const addr = ip.address.split('/')[0]!;
    if (!held.has(addr)) throw new CniError(Code.InvalidConfig, `${addr} is not allocated to ${att.containerID}/${att.ifname}`);
  }
}

/** The addresses reserved in `dataDir`, whoever holds them. */
export function reserved(dataDir: string): Set<string> {
  return new Set(new DiskStore(dataDir).list().map((r) => r.ip));
}

/** STATUS: the data dir is usable and every range set has room. */
export function status(config: IpamConfig): void {
  const taken = reserved(config.dataDir);
  for (const set of config.rangesets) {
    if (!pick(set, taken, undefined)) throw new CniError(Code.NotAvailable, `no free address left in range ${rangeName(set)}`);
  }
}
