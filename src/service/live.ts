import { contains, parseAddr, type Cidr } from '../ip/cidr.js';
import type { Store } from '../store/store.js';
import { parseNetworkConfig } from '../subnet/config.js';
import { CONFIG_KEY, parseSubnetKey, SUBNETS_PREFIX } from '../subnet/lease.js';

/**
 * Which endpoint IPs count, from flannel's leases: an address inside the pod Network counts only
 * while some node holds a lease on its subnet (a node whose lease is gone takes its pods'
 * endpoints with it); an address outside the Network (an EndpointSlice naming an outside server)
 * always counts. Without a network config every address counts.
 */
export function livenessOf(network: Cidr | undefined, subnets: Cidr[]): (ip: string) => boolean {
  return (ip) => {
    const addr = parseAddr(ip);
    if (!network || !contains(network, addr)) return true;
    return subnets.some((s) => contains(s, addr));
  };
}

/** livenessOf the network config and leases in flannel's store. */
export async function leaseLiveness(flannel: Store): Promise<(ip: string) => boolean> {
  const [config, leases] = await Promise.all([flannel.get(CONFIG_KEY), flannel.list(SUBNETS_PREFIX)]);
  let network: Cidr | undefined;
  try {
    network = config ? parseNetworkConfig(config.value).network : undefined;
  } catch {
    network = undefined;
  }
  const subnets = leases.items.map((kv) => parseSubnetKey(kv.key)).filter((s): s is Cidr => s !== undefined);
  return livenessOf(network, subnets);
}
