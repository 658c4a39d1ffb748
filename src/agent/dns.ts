import { KernelError } from '../kernel/errors.js';
import type { Netns } from '../kernel/exec.js';
import { nftTx } from '../kernel/nft.js';
import * as op from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { addrs, cachedRuleset, link } from '../kernel/state.js';

/**
 * Node-local cluster DNS, after NodeLocal DNSCache: the cluster DNS IP (the kube-dns Service's
 * ClusterIP) is an address of a dummy device (`weft-dns`) on every node, and the agent's DNS server listens on
 * it, so a pod's query is answered on its own node. The address alone is not enough: the service
 * proxy's nat prerouting hook runs before routing finds the local address and would DNAT the query
 * to the Service's endpoints. So the agent's `ip weft` table marks DNS to and from that address
 * `notrack` at raw priority (notrackRules in backend/firewall.ts, in the raw chains the VXLAN rules
 * use too, written and repaired by the agent's reconcile): untracked packets skip every nat hook
 * (no DNAT) and make no conntrack entry (no 5 s lookups from UDP conntrack races, kubernetes issue
 * 56903), and the proxy's no-endpoint checks, which sit in nat chains, pass them too. This module
 * keeps the device and its address.
 */
export const DNS_DEVICE = 'weft-dns';
/** The table of its own the notrack rules had before they joined `ip weft`; an agent deletes one it finds. */
export const OLD_DNS_TABLE = 'weft-dns';
export const DEFAULT_CLUSTER_DNS = '10.96.0.10';
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

export const deleteOldDnsTable = (ns: Netns) => op.nft({ ns, tx: nftTx('ip', OLD_DNS_TABLE).delete({ type: 'table' }), tolerate: 'missing' });
const DELETED_OLD_TABLE = `delete nftables table ip ${OLD_DNS_TABLE} (an earlier agent's: the notrack rules are in ip weft now)`;

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

const oldTables = cachedRuleset((t) => t !== OLD_DNS_TABLE);

/** What is there now: the device, its IPv4 addresses, and whether an earlier agent's table is left. */
export async function readDnsState(ns: Netns): Promise<{ device: boolean; up: boolean; addrs: string[]; oldTable: boolean }> {
  const dev = await link(ns, DNS_DEVICE);
  const list = dev ? (await addrs(ns, DNS_DEVICE)).filter((a) => a.family === 4).map((a) => a.address) : [];
  const oldTable = (await oldTables(ns)).some((t) => t.family === 'ip' && t.name === OLD_DNS_TABLE);
  return { device: dev !== undefined, up: dev?.up ?? false, addrs: list, oldTable };
}

/**
 * Makes the device and the address as wanted, and deletes an earlier agent's table (an upgrade in
 * place); returns what it changed (nothing when all is in place, so the agent's resync can call it every time).
 */
export async function ensureNodeDns(ns: Netns, ip: string): Promise<string[]> {
  const have = await readDnsState(ns);
  const changes: string[] = [];
  const plan = new Plan();
  if (!have.device) changes.push(await createDnsDevice(ns));
  if (!have.device || !have.up || have.addrs.length !== 1 || have.addrs[0] !== ip) {
    plan.add(...dnsDevicePlan(ns, ip, have).ops);
    changes.push(`put ${ip}/32 on ${DNS_DEVICE}, up`);
  }
  if (have.oldTable) {
    plan.add(deleteOldDnsTable(ns));
    changes.push(DELETED_OLD_TABLE);
  }
  if (!plan.empty) await apply(plan);
  return changes;
}

/** Removes the device and an earlier agent's table (`--cleanup`, or an agent started with --no-dns); what was there is returned. */
export async function removeNodeDns(ns: Netns): Promise<string[]> {
  const have = await readDnsState(ns);
  const plan = new Plan();
  const changes: string[] = [];
  if (have.device) {
    plan.add(op.delLink({ ns, dev: DNS_DEVICE, tolerate: 'missing' }));
    changes.push(`delete device ${DNS_DEVICE}`);
  }
  if (have.oldTable) {
    plan.add(deleteOldDnsTable(ns));
    changes.push(DELETED_OLD_TABLE);
  }
  if (!plan.empty) await apply(plan);
  return changes;
}
