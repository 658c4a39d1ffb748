import { contains, formatAddr, formatNetwork, parseAddr, type Cidr } from '../ip/cidr.js';
import type { Lease } from '../subnet/lease.js';
import type { DesiredOptions, DesiredState, Firewall, NodeInfo } from './types.js';

export const baseAddr = (subnet: Cidr): string => formatAddr({ family: 4, value: subnet.base });

/** Whether `ip` sits on one of the underlay interface's attached subnets (reachable without a router). */
export function onSameSegment(node: NodeInfo, ip: string): boolean {
  const addr = parseAddr(ip);
  return node.ifaceNets.some((net) => contains(net, addr));
}

/** Remote leases in a stable order (by subnet), so plans and status do not shuffle. */
export function sortLeases(leases: Lease[]): Lease[] {
  return [...leases].sort((a, b) => (a.subnet.base < b.subnet.base ? -1 : a.subnet.base > b.subnet.base ? 1 : 0));
}

export function emptyState(own: Lease, options: DesiredOptions, firewall: Partial<Firewall> = {}): DesiredState {
  return {
    network: formatNetwork(options.network),
    ownSubnet: formatNetwork(own.subnet),
    routes: [],
    neighbours: [],
    fdb: [],
    firewall: {
      network: formatNetwork(options.network),
      ownSubnet: formatNetwork(own.subnet),
      ipMasq: options.ipMasq,
      forwardRules: options.forwardRules ?? true,
      ...(options.dns ? { dns: options.dns } : {}),
      ...firewall,
    },
    skipped: [],
  };
}
