import { teardown } from '../backend/reconcile.js';
import { formatNetwork } from '../ip/cidr.js';
import { apply } from '../kernel/plan.js';
import { links, nftRuleset, routes } from '../kernel/state.js';
import { cleanupProxy, PROXY_TABLE } from '../proxy/proxy.js';
import { EtcdStore, type EtcdTlsOptions } from '../store/etcd.js';
import { readSubnetEnv } from '../subnet/env.js';
import { decodeLeaseAttrs, subnetKey } from '../subnet/lease.js';
import { removeNodeDns } from './dns.js';
import type { Logger } from './log.js';
import { discoverNode } from './node.js';

/**
 * `weft agent --cleanup`: removes what the agent programmed in this namespace (its VXLAN devices
 * with their neighbours and fdb entries, its routes, its nftables rules, the service proxy's tables) and, when etcd is given,
 * gives up this node's lease so other nodes drop their routes to it at once. The lease is deleted
 * only if it still holds exactly what was read (one compare-and-delete transaction) and carries
 * this node's PublicIP, so a lease another node took in the meantime stays. subnet.env stays, so
 * a later start asks for the same subnet again.
 */
export async function cleanup(
  subnetFile: string,
  log: Logger,
  lease?: { etcd: { endpoints: string[]; prefix: string; tls?: EtcdTlsOptions }; iface?: string; publicIP?: string; node: string },
): Promise<string[]> {
  const env = await readSubnetEnv(subnetFile).catch(() => undefined);
  const [linkList, routeList, ruleset] = await Promise.all([links(undefined), routes(undefined), nftRuleset(undefined)]);
  const network = env ? formatNetwork(env.network) : '0.0.0.0/32';
  const own = env ? formatNetwork(env.subnet) : '0.0.0.0/32';
  if (!env) log.warn(`no readable ${subnetFile}: removing devices and nftables rules, but not routes (which need the network from it)`);
  const { plan, changes } = teardown(undefined, network, own, { links: linkList, routes: env ? routeList : [], ruleset });
  await apply(plan);
  if (await cleanupProxy(undefined)) changes.push(`delete the service proxy's tables (ip ${PROXY_TABLE}*)`);
  changes.push(...(await removeNodeDns(undefined)));
  for (const c of changes) log.info(c);
  if (lease && env) {
    const store = new EtcdStore({
      endpoints: lease.etcd.endpoints,
      prefix: lease.etcd.prefix,
      timeoutMs: 3000,
      ...(lease.etcd.tls ? { tls: lease.etcd.tls } : {}),
    });
    try {
      const node = await discoverNode(lease.node, lease.iface, lease.publicIP).catch(() => undefined);
      const key = subnetKey({ ...env.subnet, ip: env.subnet.base });
      const kv = await store.get(key);
      const holder = kv ? decodeLeaseAttrs(kv.value)?.publicIP : undefined;
      if (kv && node && holder === node.publicIP && (await store.deleteIfValue(key, kv.value))) {
        changes.push(`release lease ${key}`);
        log.info('released lease', { key });
      } else if (kv) {
        log.info("lease not released: it does not carry this node's PublicIP (or changed while we looked)", { key, holder });
      }
    } catch (err) {
      log.warn('could not release the lease; it expires with its TTL', { error: (err as Error).message });
    } finally {
      await store.close().catch(() => undefined);
    }
  }
  return changes;
}
