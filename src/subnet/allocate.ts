/** Subnet allocation: which subnets a node may hold, and which one it takes. */
import { randomInt } from 'node:crypto';
import { formatNetwork, lastAddr, nthSubnet, overlaps, type Cidr } from '../ip/cidr.js';
import type { KeyValue } from '../store/store.js';
import type { NetworkConfig } from './config.js';
import { decodeLeaseAttrs, LeaseError, parseSubnetKey, SUBNETS_PREFIX } from './lease.js';

/** Whether a node may hold `subnet` under `config` (flannel's isSubnetConfigCompat). */
export function isLeasable(config: NetworkConfig, subnet: Cidr): boolean {
  return subnet.family === 4 && subnet.prefix === config.subnetLen && subnet.base >= config.subnetMin.base && subnet.base <= config.subnetMax.base;
}

/**
 * A subnet chosen uniformly at random among those in [SubnetMin, SubnetMax] that overlap none of
 * `taken` (which may have any prefix length, e.g. leases from an older config).
 */
export function pickFreeSubnet(config: NetworkConfig, taken: Cidr[]): Cidr {
  const shift = BigInt(32 - config.subnetLen);
  const base = config.network.base;
  const lo = (config.subnetMin.base - base) >> shift;
  const hi = (config.subnetMax.base - base) >> shift;
  const end = lastAddr(config.network);
  const intervals: [bigint, bigint][] = [];
  for (const t of taken) {
    const first = max(t.base, base);
    const last = min(lastAddr(t), end);
    if (first > last) continue;
    const a = max((first - base) >> shift, lo);
    const b = min((last - base) >> shift, hi);
    if (a <= b) intervals.push([a, b]);
  }
  intervals.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const merged: [bigint, bigint][] = [];
  for (const [a, b] of intervals) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1] + 1n) last[1] = max(last[1], b);
    else merged.push([a, b]);
  }
  const total = hi - lo + 1n;
  const free = merged.reduce((n, [a, b]) => n - (b - a + 1n), total);
  if (free === 0n) {
    throw new LeaseError(
      'out-of-subnets',
      `out of subnets: all ${total} /${config.subnetLen} subnets ` +
        `from ${formatNetwork(config.subnetMin)} to ${formatNetwork(config.subnetMax)} are leased; ` +
        `delete leases of nodes that are gone (keys under ${SUBNETS_PREFIX}) or widen Network, SubnetMin or SubnetMax`,
    );
  }
  let index = lo + BigInt(randomInt(Number(free)));
  for (const [a, b] of merged) {
    if (a > index) break;
    index += b - a + 1n;
  }
  return nthSubnet(config.network, config.subnetLen, index);
}

/**
 * Which subnet a node should hold, given every lease in the store, in flannel's order of
 * preference: the lease that already carries its PublicIP (`keep`: rewrite it in place), else the
 * preferred subnet (from subnet.env) if nobody holds it, else a random free one (`new`: create it).
 * A lease carrying its PublicIP that no longer fits the config is `stale`: delete it first.
 * Pure: the caller writes, with compare-and-swap, so a lost race is retried with a fresh listing.
 */
export type LeaseChoice = { kind: 'keep'; subnet: Cidr; key: string; value: string } | { kind: 'new'; subnet: Cidr; stale?: { key: string; value: string } };

export function chooseLease(config: NetworkConfig, items: KeyValue[], publicIP: string, preferred?: Cidr): LeaseChoice {
  const leases = items.flatMap((kv) => {
    const subnet = parseSubnetKey(kv.key);
    return subnet ? [{ subnet, key: kv.key, value: kv.value, attrs: decodeLeaseAttrs(kv.value) }] : [];
  });
  const mine = leases.find((l) => l.attrs?.publicIP === publicIP);
  if (mine && isLeasable(config, mine.subnet)) return { kind: 'keep', subnet: mine.subnet, key: mine.key, value: mine.value };
  // Keys whose value cannot be read still hold their subnet.
  const taken = leases.filter((l) => l !== mine).map((l) => l.subnet);
  const want = preferred && { ...preferred, ip: preferred.base };
  const subnet = want && isLeasable(config, want) && !taken.some((t) => overlaps(t, want)) ? want : pickFreeSubnet(config, taken);
  return { kind: 'new', subnet, ...(mine ? { stale: { key: mine.key, value: mine.value } } : {}) };
}

const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);
const min = (a: bigint, b: bigint): bigint => (a < b ? a : b);
