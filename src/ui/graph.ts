import { DNS_DEVICE } from '../agent/dns.js';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { netnsPath } from '../kernel/netns.js';
import { snapshot } from '../kernel/state.js';
import { formatPorts, type RegistryView } from '../lab/registry.js';
import type { LabBackend, LabState, NodeState } from '../lab/state.js';
import { serviceKey } from '../service/types.js';

/**
 * The whole lab as the web view draws it: what state.json records, the devices each node's kernel
 * has (read over rtnetlink, so the picture shows cni0 and flannel.1 as they are, not as planned),
 * and the Services with their endpoints from the registry.
 */
export interface UiDevice {
  name: string;
  /** bridge, vxlan, tun, macvlan, ... (the link's kind). */
  kind: string;
  /** Its IPv4 address with prefix, when it has one. */
  addr?: string;
  vni?: number;
  mtu: number;
}

export interface UiNode {
  name: string;
  ip: string;
  /** Its pod subnet, as a network (10.244.1.0/24). */
  subnet?: string;
  pending?: boolean;
  /** The pods' bridge (cni0); none in routed mode. */
  bridge?: UiDevice;
  /** Routed mode: each pod's IP → the host veth its /32 route leads to (no bridge). */
  podVeths?: Record<string, string>;
  /** The backend's device: flannel.<VNI> (vxlan), flannel0 (udp); none for host-gw. */
  tunnel?: UiDevice;
  /** Underlay mode: the node's macvlan shim towards its own pods. */
  shim?: UiDevice;
  /** The node-local cluster DNS's device (weft-dns), holding the kube-dns ClusterIP. */
  dns?: UiDevice;
}

export interface UiPod {
  name: string;
  node: string;
  ip: string;
  namespace: string;
  labels: Record<string, string>;
  containers: string[];
  pending?: boolean;
}

export interface UiService {
  key: string;
  namespace: string;
  name: string;
  type: string;
  clusterIP?: string;
  ports: string;
  endpoints: { ip: string; pod?: string; ready: boolean }[];
}

export interface UiGraph {
  lab: string;
  backend: LabBackend;
  /** How the CNI wires the pods: through cni0, routed (no bridge, a /32 route per pod), or macvlan (underlay labs). */
  cniMode: 'bridge' | 'routed' | 'macvlan';
  underlay: { cidr: string; bridge: string };
  outside: { ip: string; gateway: string };
  etcd?: { ip: string; endpoint: string };
  nodes: UiNode[];
  pods: UiPod[];
  services: UiService[];
  /** Why Services are missing: no registry (underlay mode) or it did not answer. */
  servicesNote?: string;
  monitoring?: { ip: string; port: number };
}

async function devices(node: NodeState, routed: boolean): Promise<Pick<UiNode, 'bridge' | 'tunnel' | 'shim' | 'dns' | 'podVeths'>> {
  const snap = await snapshot(netnsPath(node.ns)).catch(() => undefined);
  if (!snap) return {};
  const dev = (kind: string | undefined, name?: string): UiDevice | undefined => {
    // The node-local DNS's bridge (weft-dns) is not the pods' bridge.
    const l = snap.links.find((x) => (!kind || x.kind === kind) && (name ? x.name === name : x.name !== DNS_DEVICE));
    if (!l) return undefined;
    const a = snap.addrs.find((x) => x.dev === l.name);
    return { name: l.name, kind: l.kind ?? 'device', mtu: l.mtu, ...(a && { addr: `${a.address}/${a.prefix}` }), ...(l.vxlan && { vni: l.vxlan.vni }) };
  };
  const tunnel = dev('vxlan') ?? dev('tun');
  const bridge = dev('bridge');
  const shim = dev('macvlan', 'weft-shim');
  const dns = dev(undefined, DNS_DEVICE);
  const veths = new Set(snap.links.filter((l) => l.kind === 'veth').map((l) => l.name));
  const podVeths = routed
    ? Object.fromEntries(snap.routes.filter((r) => r.dst.endsWith('/32') && r.dev && veths.has(r.dev)).map((r) => [r.dst.slice(0, -3), r.dev!]))
    : undefined;
  return { ...(bridge && { bridge }), ...(tunnel && { tunnel }), ...(shim && { shim }), ...(dns && { dns }), ...(podVeths && { podVeths }) };
}

export async function buildGraph(s: LabState, view: RegistryView | undefined, registryNote: string | undefined): Promise<UiGraph> {
  const overlay = s.backend !== 'macvlan';
  const nodes = await Promise.all(
    s.nodes.map(async (n): Promise<UiNode> => ({
      name: n.name,
      ip: n.ip,
      ...(n.subnet && { subnet: formatNetwork(parseCidr(n.subnet)) }),
      ...(n.pending && { pending: true }),
      ...(await devices(n, s.cniMode === 'routed')),
    })),
  );
  const records = new Map((view?.pods ?? []).map((p) => [`${p.namespace}/${p.name}`, p]));
  const pods = s.pods.map((p): UiPod => {
    const namespace = p.namespace ?? 'default';
    return {
      name: p.name,
      node: p.node,
      ip: p.ip,
      namespace,
      labels: records.get(`${namespace}/${p.name}`)?.labels ?? {},
      containers: p.containers,
      ...(p.pending && { pending: true }),
    };
  });
  const podByIp = new Map(s.pods.map((p) => [p.ip, p.name]));
  const services = (view?.services ?? []).map((svc): UiService => ({
    key: serviceKey(svc),
    namespace: svc.namespace,
    name: svc.name,
    type: svc.type,
    ...(svc.clusterIP && { clusterIP: svc.clusterIP }),
    ports: formatPorts(svc),
    endpoints: (view?.endpoints[serviceKey(svc)] ?? []).map((e) => ({
      ip: e.ip,
      ...(podByIp.has(e.ip) && { pod: podByIp.get(e.ip) }),
      ready: e.conditions.ready,
    })),
  }));
  return {
    lab: s.name,
    backend: s.backend,
    cniMode: overlay ? (s.cniMode ?? 'bridge') : 'macvlan',
    underlay: { cidr: overlay ? '198.18.0.0/24' : '198.18.0.0/16', bridge: 'br0' },
    outside: { ip: s.outside.ip, gateway: s.outside.gateway },
    ...(overlay && { etcd: { ip: s.etcd.ip, endpoint: s.etcd.endpoint } }),
    nodes,
    pods,
    services,
    ...(overlay ? registryNote && { servicesNote: registryNote } : { servicesNote: 'underlay mode: no etcd, no agents, so no Services' }),
    ...(s.monitoring && { monitoring: { ip: s.monitoring.ip, port: s.monitoring.port } }),
  };
}
