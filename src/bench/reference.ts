import { addAddr, addBridge, addFdb, addRoute, addVeth, addVxlan, setLink, setNeigh, setSysctl } from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import type { Topology } from '../topo/topology.js';

/**
 * The data path flannel builds, made by hand with no firewall rule anywhere: the reference that
 * `weft bench datapath` measures Weft against in the same run (issue 12 §3). Two node namespaces on
 * an underlay switch as the lab's (198.18.0.11 and .12 on br0), each with a bridge `cni0` holding
 * the gateway 10.244.<i>.1/24 and one pod on a veth into it (hairpin on, as kube-flannel's conflist
 * asks). vxlan: `flannel.1` (VNI 1, port 8472, nolearning, the pods' MTU), 10.244.<i>.0/32 on it, and
 * toward the other node the route `10.244.<j>.0/24 via 10.244.<j>.0 dev flannel.1 onlink`, the
 * permanent neighbour and the fdb entry. host-gw: `10.244.<j>.0/24 via <node j's underlay IP>`.
 */
export type RefBackend = 'vxlan' | 'host-gw';

export interface RefNames {
  underlay: string;
  nodes: [string, string];
  pods: [string, string];
}

export interface RefEndpoint {
  /** Namespace name, as `ip netns exec` takes it. */
  ns: string;
  ip: string;
}

export interface Reference {
  nodes: [RefEndpoint, RefEndpoint];
  pods: [RefEndpoint, RefEndpoint];
}

const NODE_IP = (i: number) => `198.18.0.${10 + i}`;
const VTEP_MAC = (i: number) => `0e:77:65:66:00:0${i}`;
const POD_IP = (i: number) => `10.244.${i}.2`;

/** The namespace names of a reference for `backend`: short, so both backends' fit beside each other. */
export function refNames(topo: Pick<Topology, 'name'>, backend: RefBackend): RefNames {
  const tag = backend === 'vxlan' ? 'rvx' : 'rgw';
  return {
    underlay: topo.name(`${tag}-u`),
    nodes: [topo.name(`${tag}-n1`), topo.name(`${tag}-n2`)],
    pods: [topo.name(`${tag}-p1`), topo.name(`${tag}-p2`)],
  };
}

/** The kernel changes that build the reference in namespaces that already exist. `mtu`: the pods' (and flannel.1's). */
export function referencePlan(n: RefNames, backend: RefBackend, mtu: number): Plan {
  const path = (name: string) => `/run/netns/${name}`;
  const u = path(n.underlay);
  const plan = new Plan().add(addBridge({ ns: u, name: 'br0' }), setLink({ ns: u, dev: 'br0', up: true }));
  for (const i of [1, 2] as const) {
    const j = 3 - i;
    const node = path(n.nodes[i - 1]!);
    const pod = path(n.pods[i - 1]!);
    plan.add(
      addVeth({ ns: u, name: `port${i}`, peer: { name: 'eth0', netns: node } }),
      setLink({ ns: u, dev: `port${i}`, master: 'br0', up: true }),
      addAddr({ ns: node, addr: `${NODE_IP(i)}/24`, dev: 'eth0' }),
      setLink({ ns: node, dev: 'eth0', up: true }),
      setSysctl({ ns: node, key: 'net.ipv4.ip_forward', value: '1' }),
      addBridge({ ns: node, name: 'cni0', mtu }),
      addAddr({ ns: node, addr: `10.244.${i}.1/24`, dev: 'cni0' }),
      setLink({ ns: node, dev: 'cni0', up: true }),
      addVeth({ ns: node, name: `veth${i}`, mtu, peer: { name: 'eth0', netns: pod, mtu } }),
      setLink({ ns: node, dev: `veth${i}`, master: 'cni0', up: true, hairpin: true }),
      addAddr({ ns: pod, addr: `${POD_IP(i)}/24`, dev: 'eth0' }),
      setLink({ ns: pod, dev: 'eth0', up: true }),
      addRoute({ ns: pod, dst: 'default', via: `10.244.${i}.1` }),
    );
    if (backend === 'vxlan') {
      plan.add(
        addVxlan({ ns: node, name: 'flannel.1', vni: 1, local: NODE_IP(i), dev: 'eth0', port: 8472, learning: false, mtu, mac: VTEP_MAC(i) }),
        addAddr({ ns: node, addr: `10.244.${i}.0/32`, dev: 'flannel.1' }),
        setLink({ ns: node, dev: 'flannel.1', up: true }),
        setNeigh({ ns: node, dst: `10.244.${j}.0`, mac: VTEP_MAC(j), dev: 'flannel.1' }),
        addFdb({ ns: node, mac: VTEP_MAC(j), dev: 'flannel.1', dst: NODE_IP(j) }),
        addRoute({ ns: node, dst: `10.244.${j}.0/24`, via: `10.244.${j}.0`, dev: 'flannel.1', onlink: true }),
      );
    } else {
      plan.add(addRoute({ ns: node, dst: `10.244.${j}.0/24`, via: NODE_IP(j), dev: 'eth0' }));
    }
  }
  return plan;
}

/**
 * Builds the reference for `backend` in namespaces of `topo` (so the sweeper knows them, and
 * `topo.destroy` removes them); returns where its nodes and pods answer.
 */
export async function buildReference(topo: Topology, backend: RefBackend, mtu: number): Promise<Reference> {
  const n = refNames(topo, backend);
  const short = (name: string) => name.slice(topo.id.length + 1);
  for (const name of [n.underlay, ...n.nodes, ...n.pods]) await topo.netns(short(name));
  await apply(referencePlan(n, backend, mtu));
  return {
    nodes: [
      { ns: n.nodes[0], ip: NODE_IP(1) },
      { ns: n.nodes[1], ip: NODE_IP(2) },
    ],
    pods: [
      { ns: n.pods[0], ip: POD_IP(1) },
      { ns: n.pods[1], ip: POD_IP(2) },
    ],
  };
}
