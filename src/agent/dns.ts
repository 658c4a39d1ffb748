import { KernelError } from '../kernel/errors.js';
import type { Netns } from '../kernel/exec.js';
import { nftTx } from '../kernel/nft.js';
import * as op from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { addrs, cachedRuleset, link, nftRuleset } from '../kernel/state.js';

/**
 * Node-local cluster DNS, after NodeLocal DNSCache: the cluster DNS IP (the kube-dns Service's
 * ClusterIP) is an address of a dummy device (`weft-dns`) on every node, and the agent's DNS server listens on
 * it, so a pod's query is answered on its own node. The address alone is not enough: the service
 * proxy's nat prerouting hook runs before routing finds the local address and would DNAT the query
 * to the Service's endpoints. So the `weft-dns` table marks DNS to and from that address `notrack`
 * at raw priority: untracked packets skip every nat hook (no DNAT) and make no conntrack entry
 * (no 5 s lookups from UDP conntrack races, kubernetes issue 56903), and the proxy's no-endpoint
 * checks, which sit in nat chains, pass them too.
 */
export const DNS_DEVICE = 'weft-dns';
export const DNS_TABLE = 'weft-dns';
export const DNS_FAMILY = 'ip';
export const DEFAULT_CLUSTER_DNS = '10.96.0.10';
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';
export const DNS_PORT = 53;

/** The notrack rules for DNS to and from `ip`, as `nft list` prints them. */
export function notrackRules(ip: string): { chain: 'prerouting' | 'output'; rule: string }[] {
  const to = `ip daddr ${ip} meta l4proto { tcp, udp } th dport ${DNS_PORT} notrack`;
  const from = `ip saddr ${ip} meta l4proto { tcp, udp } th sport ${DNS_PORT} notrack`;
  return [
    { chain: 'prerouting', rule: to },
    { chain: 'output', rule: to },
    { chain: 'output', rule: from },
  ];
}

const ruleComment = (ip: string) => `node-local DNS ${ip}`;

/** The whole `weft-dns` table, rewritten in one transaction (flushing it first, so a changed IP leaves nothing behind). */
export function dnsTablePlan(ns: Netns, ip: string): Plan {
  const tx = nftTx(DNS_FAMILY, DNS_TABLE).add({ type: 'table', comment: 'weft node-local DNS: no conntrack, no DNAT' });
  tx.flush({ type: 'table' });
  for (const chain of ['prerouting', 'output'] as const) tx.add({ type: 'chain', name: chain, chainType: 'filter', hook: chain, priority: 'raw' });
  // The comment names the IP, so that reading the table back tells whether it is for this one.
  for (const r of notrackRules(ip)) tx.add({ type: 'rule', chain: r.chain, rule: r.rule, comment: ruleComment(ip) });
  return new Plan().add(op.nft({ ns, tx }));
}

/**
 * Creates the device: a dummy, or where the kernel has no dummy driver (some VM kernels) an empty
 * bridge, which holds a local address just as well. Returns what it made.
 */
export async function createDnsDevice(ns: Netns): Promise<string> {
  try {
    await apply(new Plan().add(op.addDummy({ ns, name: DNS_DEVICE, tolerate: 'exists' })));
    return `create dummy device ${DNS_DEVICE}`;
  } catch (e) {
    if (!(e instanceof KernelError && e.kind === 'unsupported')) throw e;
    await apply(new Plan().add(op.addBridge({ ns, name: DNS_DEVICE, tolerate: 'exists' })));
    return `create device ${DNS_DEVICE} as an empty bridge (this kernel has no dummy driver)`;
  }
}

/** The device's address and state: only `ip`, as a /32, up. */
export function dnsDevicePlan(ns: Netns, ip: string, have: { addrs: string[] }): Plan {
  const plan = new Plan();
  for (const a of have.addrs) if (a !== ip) plan.add(op.delAddr({ ns, addr: `${a}/32`, dev: DNS_DEVICE, tolerate: 'missing' }));
  if (!have.addrs.includes(ip)) plan.add(op.replaceAddr({ ns, addr: `${ip}/32`, dev: DNS_DEVICE }));
  return plan.add(op.setLink({ ns, dev: DNS_DEVICE, up: true }));
}

const dnsRuleset = cachedRuleset((t) => t !== DNS_TABLE);

/** What is there now: the device, its IPv4 addresses, and whether the table holds exactly our rules. */
export async function readDnsState(ns: Netns, ip: string): Promise<{ device: boolean; up: boolean; addrs: string[]; table: boolean }> {
  const dev = await link(ns, DNS_DEVICE);
  const list = dev ? (await addrs(ns, DNS_DEVICE)).filter((a) => a.family === 4).map((a) => a.address) : [];
  const table = (await dnsRuleset(ns)).find((t) => t.family === DNS_FAMILY && t.name === DNS_TABLE);
  const rules = notrackRules(ip);
  const complete =
    table !== undefined &&
    (['prerouting', 'output'] as const).every((c) => {
      const have = table.chains.get(c)?.rules ?? [];
      return have.length === rules.filter((r) => r.chain === c).length && have.every((r) => r.comment === ruleComment(ip));
    });
  return { device: dev !== undefined, up: dev?.up ?? false, addrs: list, table: complete };
}

/**
 * Makes the device, the address and the table as wanted; returns what it changed (nothing when all
 * is in place, so the agent's resync can call it every time).
 */
export async function ensureNodeDns(ns: Netns, ip: string): Promise<string[]> {
  const have = await readDnsState(ns, ip);
  const changes: string[] = [];
  const plan = new Plan();
  if (!have.device) changes.push(await createDnsDevice(ns));
  if (!have.device || !have.up || have.addrs.length !== 1 || have.addrs[0] !== ip) {
    plan.add(...dnsDevicePlan(ns, ip, have).ops);
    changes.push(`put ${ip}/32 on ${DNS_DEVICE}, up`);
  }
  if (!have.table) {
    plan.add(...dnsTablePlan(ns, ip).ops);
    changes.push(`write nftables table ${DNS_FAMILY} ${DNS_TABLE} (notrack DNS to and from ${ip})`);
  }
  if (!plan.empty) await apply(plan);
  return changes;
}

/** Removes the device and the table (`--cleanup`, or an agent started with --no-dns); what was there is returned. */
export async function removeNodeDns(ns: Netns): Promise<string[]> {
  const dev = await link(ns, DNS_DEVICE);
  const table = (await nftRuleset(ns, (t) => t !== DNS_TABLE)).some((t) => t.family === DNS_FAMILY && t.name === DNS_TABLE);
  const plan = new Plan();
  const changes: string[] = [];
  if (dev) {
    plan.add(op.delLink({ ns, dev: DNS_DEVICE, tolerate: 'missing' }));
    changes.push(`delete device ${DNS_DEVICE}`);
  }
  if (table) {
    plan.add(op.nft({ ns, tx: nftTx(DNS_FAMILY, DNS_TABLE).delete({ type: 'table' }), tolerate: 'missing' }));
    changes.push(`delete nftables table ${DNS_FAMILY} ${DNS_TABLE}`);
  }
  if (!plan.empty) await apply(plan);
  return changes;
}
