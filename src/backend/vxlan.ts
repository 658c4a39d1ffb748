import { formatNetwork } from '../ip/cidr.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import { baseAddr, emptyState, onSameSegment, sortLeases } from './common.js';
import type { Backend, DesiredOptions, DesiredState, NodeInfo } from './types.js';

export const VXLAN_OVERHEAD = 50;

export interface VxlanOptions {
  vni: number;
  port: number;
  directRouting: boolean;
  mtu?: number;
  /** The device's MAC (VtepMAC); the agent keeps it stable across restarts. */
  mac: string;
}

/**
 * flannel's vxlan backend: device flannel.<VNI> with <subnet base>/32, learning off, and for each
 * remote lease a permanent neighbour (remote base → VtepMAC), an fdb entry (VtepMAC → PublicIP)
 * and a route `<subnet> via <remote base> dev flannel.<VNI> onlink`. With DirectRouting a remote
 * on this node's L2 segment gets a plain route via its PublicIP instead.
 */
export class VxlanBackend implements Backend {
  readonly type = 'vxlan' as const;
  readonly mtu: number;
  readonly device: string;

  constructor(
    private readonly node: NodeInfo,
    private readonly options: VxlanOptions,
  ) {
    this.mtu = options.mtu ?? node.ifaceMtu - VXLAN_OVERHEAD;
    this.device = `flannel.${options.vni}`;
  }

  leaseAttrs(): LeaseAttrs {
    return { publicIP: this.node.publicIP, backendType: 'vxlan', backendData: { VNI: this.options.vni, VtepMAC: this.options.mac } };
  }

  desired(own: Lease, remotes: Lease[], options: DesiredOptions): DesiredState {
    const peers: string[] = [];
    const state = emptyState(own, options, { vxlan: { port: this.options.port, peers } });
    const dev = this.device;
    state.device = {
      name: dev,
      vni: this.options.vni,
      port: this.options.port,
      local: this.node.publicIP,
      dev: this.node.iface,
      mac: this.options.mac,
      mtu: this.mtu,
      address: `${baseAddr(own.subnet)}/32`,
    };
    const seen = new Set<string>();
    for (const lease of sortLeases(remotes)) {
      const subnet = formatNetwork(lease.subnet);
      const ip = lease.attrs.publicIP;
      if (!seen.has(ip)) {
        seen.add(ip);
        peers.push(ip);
      }
      if (this.options.directRouting && onSameSegment(this.node, ip)) {
        state.routes.push({ dst: subnet, via: ip, dev: this.node.iface, onlink: false });
        continue;
      }
      const data = lease.attrs.backendData as { VNI?: unknown; VtepMAC?: unknown } | undefined;
      const mac = typeof data?.VtepMAC === 'string' ? data.VtepMAC.toLowerCase() : undefined;
      if (lease.attrs.backendType !== 'vxlan' || mac === undefined || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) {
        state.skipped.push({ subnet, publicIP: ip, reason: `its lease carries no vxlan VtepMAC (BackendType ${lease.attrs.backendType ?? 'udp'})` });
        continue;
      }
      if (data?.VNI !== undefined && data.VNI !== this.options.vni) {
        state.skipped.push({ subnet, publicIP: ip, reason: `it uses VNI ${JSON.stringify(data.VNI)}, this node VNI ${this.options.vni}` });
        continue;
      }
      const gw = baseAddr(lease.subnet);
      state.neighbours.push({ ip: gw, mac, dev });
      state.fdb.push({ mac, dst: ip, dev });
      state.routes.push({ dst: subnet, via: gw, dev, onlink: true });
    }
    peers.sort();
    return state;
  }
}
