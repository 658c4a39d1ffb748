import { createBackend } from '../backend/index.js';
import { readActual, reconcile } from '../backend/reconcile.js';
import { formatCidr, formatNetwork, withAddr } from '../ip/cidr.js';
import * as op from '../kernel/ops.js';
import { Plan } from '../kernel/plan.js';
import { links } from '../kernel/state.js';
import { PROXY_TABLE } from '../proxy/proxy.js';
import { SERVICES_PREFIX } from '../service/registry.js';
import { EtcdStore } from '../store/etcd.js';
import { chooseLease } from '../subnet/allocate.js';
import { readSubnetEnv } from '../subnet/env.js';
import { decodeLeaseAttrs, encodeLeaseAttrs, parseSubnetKey, readNetworkConfig, subnetKey, SUBNETS_PREFIX, type Lease } from '../subnet/lease.js';
import type { AgentOptions } from './agent.js';
import { deleteOldDnsTable, DNS_DEVICE, dnsDevicePlan, OLD_DNS_TABLE, readDnsState } from './dns.js';
import { BRIDGE_NF_SYSCTL } from './services.js';
import { checkNetworkForNode, chooseVtepMac, discoverNode } from './node.js';

/**
 * `weft agent --dry-run`: what a start would do, from etcd and the kernel as they are now, with
 * nothing written anywhere (no lease, no subnet.env, no state dir, no kernel change): the lease it
 * would keep or take, and the exact commands of the first reconcile.
 */
export async function dryRunReport(o: AgentOptions): Promise<string> {
  const out: string[] = ['dry run: nothing was changed'];
  const node = await discoverNode(o.node, o.iface, o.publicIP, (m) => out.push(`warning: ${m}`));
  const store = new EtcdStore({ endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, timeoutMs: 5000, ...(o.etcdTls ? { tls: o.etcdTls } : {}) });
  try {
    const config = await readNetworkConfig(store);
    checkNetworkForNode(config, node);
    const device = createBackend(config, node, '', { datapath: false }).device;
    const existing = device === undefined ? undefined : (await links(undefined)).find((l) => l.name === device)?.mac;
    const { mac, fresh } = chooseVtepMac(o.stateDir, existing);
    const backend = createBackend(config, node, mac, { datapath: false });
    const previous = await readSubnetEnv(o.subnetFile).then(
      (env) => env?.subnet,
      () => undefined,
    );
    const listing = await store.list(SUBNETS_PREFIX);
    const choice = chooseLease(config, listing.items, node.publicIP, previous);
    const key = subnetKey(choice.subnet);
    const own: Lease = { subnet: choice.subnet, attrs: backend.leaseAttrs() };
    out.push(`node ${o.node}: ${node.publicIP} on ${node.iface}, backend ${backend.type}, network ${formatNetwork(config.network)}`);
    if (choice.kind === 'keep') {
      out.push(`lease: would keep ${formatNetwork(choice.subnet)} (${key} carries this node's PublicIP) and renew it`);
    } else {
      const why =
        previous && formatNetwork({ ...previous, ip: previous.base }) === formatNetwork(choice.subnet)
          ? `the subnet in ${o.subnetFile}, free`
          : 'a free subnet, chosen at random';
      out.push(
        `lease: would take ${formatNetwork(choice.subnet)} (${why})${choice.stale ? `, after deleting ${choice.stale.key}, which no longer fits the config` : ''}`,
      );
    }
    out.push(`  ${key} = ${encodeLeaseAttrs(own.attrs)}${fresh && backend.device ? ' (VtepMAC: a new random one)' : ''}`);
    out.push(
      `subnet file: would write ${o.subnetFile} (FLANNEL_SUBNET ${formatCidr(withAddr(choice.subnet, choice.subnet.base + 1n))}, FLANNEL_MTU ${backend.mtu})`,
    );
    const remotes = listing.items.flatMap((kv): Lease[] => {
      const subnet = parseSubnetKey(kv.key);
      const attrs = decodeLeaseAttrs(kv.value);
      if (!subnet || !attrs || kv.key === key || attrs.publicIP === node.publicIP) return [];
      return [{ subnet, attrs }];
    });
    out.push(`remote leases (${remotes.length}): ${remotes.map((l) => `${formatNetwork(l.subnet)} ${l.attrs.publicIP}`).join(', ') || 'none'}`);
    const desired = backend.desired(own, remotes, { network: config.network, ipMasq: o.ipMasq, forwardRules: o.forwardRules ?? true, dns: o.dns?.ip });
    const { plan } = reconcile(undefined, desired, await readActual(undefined, desired));
    if (plan.empty) out.push('the first reconcile would change nothing: the kernel already matches');
    else
      out.push(
        'the first reconcile would run:',
        ...plan
          .render()
          .split('\n')
          .map((l) => `  ${l}`),
      );
    out.push(await proxyPlan(o));
    out.push(...(await dnsPlan(o)));
    return out.join('\n');
  } finally {
    await store.close();
  }
}

/** The node-local DNS part: the device changes it would make, and what it would serve (its notrack rules are in the reconcile's `ip weft`). */
async function dnsPlan(o: AgentOptions): Promise<string[]> {
  if (!o.dns) return [`node-local DNS: off (--no-dns); would remove device ${DNS_DEVICE} and an earlier agent's table ip ${OLD_DNS_TABLE} where present`];
  const have = await readDnsState(undefined);
  const plan = new Plan();
  if (!have.device) plan.add(op.addDummy({ ns: undefined, name: DNS_DEVICE }));
  if (!have.device || !have.up || have.addrs.length !== 1 || have.addrs[0] !== o.dns.ip) plan.add(...dnsDevicePlan(undefined, o.dns.ip, have).ops);
  if (have.oldTable) plan.add(deleteOldDnsTable(undefined));
  const serve = `node-local DNS: would serve ${o.dns.zone} on ${o.dns.ip}:53 (UDP and TCP), forwarding other names to ${o.dns.upstreams?.join(', ') ?? "the nameservers of this node's /etc/resolv.conf"}`;
  return plan.empty
    ? [serve, `  ${DNS_DEVICE} is in place`]
    : [
        serve,
        ...plan
          .render()
          .split('\n')
          .map((l) => `  ${l}`),
      ];
}

/** The service proxy's part of the dry run: what it would program from the registry. */
async function proxyPlan(o: AgentOptions): Promise<string> {
  const registry = new EtcdStore({ endpoints: o.etcdEndpoints, prefix: o.registryPrefix, timeoutMs: 5000, ...(o.etcdTls ? { tls: o.etcdTls } : {}) });
  try {
    const services = (await registry.list(SERVICES_PREFIX)).items.length;
    return `service proxy: would program nftables tables ip ${PROXY_TABLE}* for the ${services} Service(s) under ${o.registryPrefix}, and set ${BRIDGE_NF_SYSCTL}=1`;
  } finally {
    await registry.close();
  }
}
