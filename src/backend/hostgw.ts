import { formatNetwork } from '../ip/cidr.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import { emptyState, onSameSegment, sortLeases } from './common.js';
import type { Backend, DesiredOptions, DesiredState, NodeInfo } from './types.js';

/**
 * host-gw: every remote subnet is routed via the remote node's PublicIP on the underlay. That needs
 * the remote node on this node's L2 segment; a route via an address that is not directly reachable
 * would black-hole the traffic, so such leases are skipped and reported instead.
 */
export class HostGwBackend implements Backend {
  readonly type = 'host-gw' as const;
  readonly mtu: number;

  constructor(
    private readonly node: NodeInfo,
    mtu?: number,
  ) {
    this.mtu = mtu ?? node.ifaceMtu;
  }

  leaseAttrs(): LeaseAttrs {
    return { publicIP: this.node.publicIP, backendType: 'host-gw' };
  }

  desired(own: Lease, remotes: Lease[], options: DesiredOptions): DesiredState {
    const state = emptyState(own, options);
    for (const lease of sortLeases(remotes)) {
      const subnet = formatNetwork(lease.subnet);
      const ip = lease.attrs.publicIP;
      if (lease.attrs.backendType !== 'host-gw') {
        state.skipped.push({ subnet, publicIP: ip, reason: `its backend is ${lease.attrs.backendType ?? 'udp'}, not host-gw` });
      } else if (!onSameSegment(this.node, ip)) {
        state.skipped.push({
          subnet,
          publicIP: ip,
          reason: `${ip} is not on ${this.node.iface}'s L2 segment (${this.node.ifaceNets.map(formatNetwork).join(', ') || 'no IPv4 address'}); host-gw needs every node on one segment, use vxlan (with DirectRouting) instead`,
        });
      } else {
        state.routes.push({ dst: subnet, via: ip, dev: this.node.iface, onlink: false });
      }
    }
    return state;
  }
}
