import type { Cidr } from '../ip/cidr.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';

/** What a backend needs to know about the node it runs on (read from the kernel by the agent). */
export interface NodeInfo {
  name: string;
  /** The underlay interface (flanneld's --iface). */
  iface: string;
  ifaceMtu: number;
  /** The address other nodes reach this one at; goes into the lease. */
  publicIP: string;
  /** Subnets directly attached to `iface`: a PublicIP inside one is on the same L2 segment. */
  ifaceNets: Cidr[];
}

/** flannel's VXLAN device, as the kernel should hold it. */
export interface VxlanDevice {
  kind?: 'vxlan';
  name: string;
  vni: number;
  port: number;
  /** Source address of encapsulated packets (the PublicIP). */
  local: string;
  /** Underlay device. */
  dev: string;
  mac: string;
  mtu: number;
  /** `<subnet base>/32`. */
  address: string;
}

/** The udp backend's TUN device (persistent, IFF_TUN | IFF_NO_PI), as the kernel should hold it. */
export interface TunDevice {
  kind: 'tun';
  name: string;
  mtu: number;
  /** `<subnet base>/32`. */
  address: string;
}

export interface DesiredRoute {
  dst: string;
  /** No gateway: a device route (the udp backend's Network route through flannel0). */
  via?: string;
  dev: string;
  onlink: boolean;
}

export interface DesiredNeighbour {
  ip: string;
  mac: string;
  dev: string;
}

export interface DesiredFdb {
  mac: string;
  /** Remote VTEP (its PublicIP). */
  dst: string;
  dev: string;
}

/** A remote lease this backend cannot serve, and why (logged, shown in status). */
export interface Skipped {
  subnet: string;
  publicIP: string;
  reason: string;
}

/** The agent's nftables table: forwarding for the Network, ip-masq, the VXLAN source filter, and notrack for the node-local DNS. */
export interface Firewall {
  network: string;
  ownSubnet: string;
  ipMasq: boolean;
  /** Accept the Network in other tables' forward chains that drop by policy (flannel's --iptables-forward-rules). */
  forwardRules: boolean;
  /** Encapsulated traffic on `port` is accepted only from `peers` (PublicIPs holding a lease). */
  vxlan?: { port: number; peers: string[] };
  /** The node-local DNS's IP (the cluster DNS IP), whose DNS traffic is untracked; absent with --no-dns. */
  dns?: string;
}

/** Everything one node's kernel should hold for the pod network, as plain data. */
export interface DesiredState {
  network: string;
  ownSubnet: string;
  device?: VxlanDevice | TunDevice;
  /** The udp backend's packet loop: what the agent itself forwards (not kernel state). */
  udp?: UdpTunnel;
  routes: DesiredRoute[];
  neighbours: DesiredNeighbour[];
  fdb: DesiredFdb[];
  firewall: Firewall;
  skipped: Skipped[];
}

/** What the udp packet loop needs: where to listen and which PublicIP serves each remote subnet. */
export interface UdpTunnel {
  device: string;
  /** flannel0's address, `<subnet base>/32`: the source of the ICMP errors the agent answers with. */
  address: string;
  ownSubnet: string;
  publicIP: string;
  port: number;
  peers: { subnet: string; publicIP: string }[];
}

export interface DatapathStatus {
  attached: boolean;
  /** How many times the loop attached to the device (more than 1: it was recreated). */
  attaches: number;
  counters: Record<string, number>;
}

/** A data path the agent runs itself (udp): synced after every reconcile, closed on stop. */
export interface Datapath {
  sync(tunnel: UdpTunnel): Promise<void>;
  status(): DatapathStatus;
  close(): Promise<void>;
}

export interface DesiredOptions {
  network: Cidr;
  ipMasq: boolean;
  /** Default true. */
  forwardRules?: boolean;
  /** The node-local DNS's IP; absent with --no-dns. */
  dns?: string;
}

export interface Backend {
  readonly type: 'vxlan' | 'host-gw' | 'udp';
  /** The pod MTU (FLANNEL_MTU). */
  readonly mtu: number;
  /** The device it programs (flannel.<VNI>, flannel0); none for host-gw. */
  readonly device?: string;
  /** This node's data for its lease (BackendType, BackendData). */
  leaseAttrs(): LeaseAttrs;
  /** The kernel state for this node's lease and every remote one. Pure: no I/O. */
  desired(own: Lease, remotes: Lease[], options: DesiredOptions): DesiredState;
  /** Present when the agent process carries the packets (udp); absent for kernel data paths. */
  readonly datapath?: Datapath;
}
