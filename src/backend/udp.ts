import { formatNetwork } from '../ip/cidr.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import { baseAddr, emptyState, sortLeases } from './common.js';
import type { Backend, Datapath, DesiredOptions, DesiredState, NodeInfo } from './types.js';

/** IPv4 header (20) + UDP header (8): what one datagram adds around an inner packet. */
export const UDP_OVERHEAD = 28;
export const TUN_DEVICE = 'flannel0';

export interface UdpOptions {
  port: number;
  mtu?: number;
}

/**
 * flannel's udp backend: a persistent TUN device flannel0 holding `<subnet base>/32`, a route for
 * the whole Network through it, and a packet loop in the agent (udp-datapath.ts) that carries each
 * IP packet read from flannel0 in one UDP datagram, no extra header, to the PublicIP:port of the
 * node whose lease holds the destination. Its lease has no BackendType, as flannel writes it.
 * The route and device are kernel state (reconciled like the others); the loop is the agent.
 */
export class UdpBackend implements Backend {
  readonly type = 'udp' as const;
  readonly mtu: number;
  readonly device = TUN_DEVICE;

  constructor(
    private readonly node: NodeInfo,
    private readonly options: UdpOptions,
    readonly datapath?: Datapath,
  ) {
    this.mtu = options.mtu ?? node.ifaceMtu - UDP_OVERHEAD;
  }

  leaseAttrs(): LeaseAttrs {
    return { publicIP: this.node.publicIP };
  }

  desired(own: Lease, remotes: Lease[], options: DesiredOptions): DesiredState {
    const state = emptyState(own, options);
    const address = `${baseAddr(own.subnet)}/32`;
    state.device = { kind: 'tun', name: TUN_DEVICE, mtu: this.mtu, address };
    state.routes.push({ dst: formatNetwork(options.network), dev: TUN_DEVICE, onlink: false });
    const peers: { subnet: string; publicIP: string }[] = [];
    for (const lease of sortLeases(remotes)) {
      const subnet = formatNetwork(lease.subnet);
      const ip = lease.attrs.publicIP;
      const type = lease.attrs.backendType;
      if (type !== undefined && type !== 'udp') {
        state.skipped.push({ subnet, publicIP: ip, reason: `its backend is ${type}, not udp` });
      } else if (ip === this.node.publicIP) {
        state.skipped.push({ subnet, publicIP: ip, reason: "it carries this node's own PublicIP" });
      } else {
        peers.push({ subnet, publicIP: ip });
      }
    }
    state.udp = { device: TUN_DEVICE, address, ownSubnet: formatNetwork(own.subnet), publicIP: this.node.publicIP, port: this.options.port, peers };
    return state;
  }
}
