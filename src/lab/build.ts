import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { netnsPath } from '../kernel/netns.js';
import { addAddr, addBridge, addMacvlan, addRoute, addVeth, delNeigh, setLink, setNeigh, setSysctl } from '../kernel/ops.js';
import { Plan } from '../kernel/plan.js';
import { clientUrl, etcdMembers, labDir, nodeDir, nsName, podDir, readState, type CniMode, type EtcdMember, type LabState, type NodeState } from './state.js';

/**
 * What a lab is made of, as data: the kernel plans, the processes' argv and the CNI configs. `up`,
 * `node add` and `pod add` carry them out; `up --dry-run` prints them.
 *
 *   outside (198.18.0.1, 203.0.113.1) ─┐
 *   etcd (198.18.0.2) ─────────────────┤
 *   etcd2.. (198.18.0.4.., optional) ──┼─ underlay: bridge br0 ─ portN ─ node eth0 198.18.0.(10+N) ─ cni0 ─ pods
 *   monitoring (198.18.0.3, optional) ─┘
 *
 * The outside world also answers DNS for a few names of its own (upstream.ts); each node's agent
 * serves the cluster DNS on 10.96.0.10 and forwards other names there. Macvlan labs have no agents
 * and so no cluster DNS: their pods get no resolv.conf.
 */
/**
 * The lab's long-lived processes run bundles (scripts/build-front.mjs): the CLI for agents and CNI
 * servers, and the runtime's own entry point. One file each loads in a third of the CPU of dist/'s
 * modules, and a lab starts a process per node and per runtime at once.
 */
export const WEFT = fileURLToPath(new URL('../../../build/lab/weft', import.meta.url));
const WORKLOAD = fileURLToPath(new URL('../../../build/lab/workload-main.js', import.meta.url));
export const OUTSIDE_IP = '203.0.113.1';
const GATEWAY_IP = '198.18.0.1';
/** Member 1 at .2, members 2 to 5 at .4 to .7 (.3 is the lab's Prometheus). */
const etcdIp = (member: number) => `198.18.0.${member === 1 ? 2 : member + 2}`;
export const POD_NETWORK = '10.244.0.0/16';
/** Overlay labs put nodes on a /24; underlay labs widen it so each node's pods get a /24 of it. */
const underlayPrefix = (s: LabState) => (s.backend === 'macvlan' ? 16 : 24);
export const nodeIp = (index: number) => `198.18.0.${10 + index}`;
export const MAX_NODE_INDEX = 240;
/**
 * Young generations for the lab's many long-lived processes, instead of Node's up to 16 MiB (×3) per
 * process. A runtime's garbage is small and short-lived: 1 MiB. An agent's is not when its proxy
 * programs a Service of 1,000 endpoints: at 1 MiB a quarter of an agent's time in verify went to
 * garbage collection, and at 100 x 10 the agents took about 12 % more CPU in `lab up` and a third more
 * in verify than at 4 MiB (docs/architecture.md, What a node costs).
 */
const RUNTIME_NODE = ['--max-semi-space-size=1'];
const AGENT_NODE = ['--max-semi-space-size=4'];
/** Where each lab agent serves /metrics, on its node's IP (the lab's Prometheus scrapes it: monitoring.ts). */
export const AGENT_METRICS_PORT = 9402;
/** The node's veth on the switch: from its index, so two long node names never share one. */
export const portName = (index: number) => `port${index}`;

/**
 * An underlay interface's MAC, from its IP: 0a:58 and the IP's four bytes (as Kubernetes' kubenet
 * derives pod MACs). Deterministic, so the static neighbour entries below never go stale: whoever
 * holds an IP later has the same MAC.
 */
export const underlayMac = (ip: string) => ['0a', '58', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');

/** Plugs namespace `ns` into the underlay switch as `eth0` with `ip` (and the MAC derived from it). */
export function plugIn(plan: Plan, s: LabState, ns: string, port: string, ip: string, defaultVia?: string): void {
  const u = netnsPath(s.underlay.ns);
  const p = netnsPath(ns);
  plan.add(
    addVeth({ ns: u, name: port, peer: { name: 'eth0', mac: underlayMac(ip), netns: p } }),
    setLink({ ns: u, dev: port, master: 'br0', up: true }),
    addAddr({ ns: p, addr: `${ip}/${underlayPrefix(s)}`, dev: 'eth0' }),
    setLink({ ns: p, dev: 'eth0', up: true }),
  );
  if (defaultVia) plan.add(addRoute({ ns: p, dst: 'default', via: defaultVia }));
}

/** The switch, and etcd's (overlay only) and the outside world's namespaces plugged into it, knowing each other's MACs. */
export function switchPlan(s: LabState): Plan {
  const u = netnsPath(s.underlay.ns);
  const plan = new Plan().add(addBridge({ ns: u, name: 'br0' }), setLink({ ns: u, dev: 'br0', up: true }));
  if (s.backend !== 'macvlan') for (const m of etcdMembers(s)) plugIn(plan, s, m.ns, m.name, m.ip, GATEWAY_IP);
  plugIn(plan, s, s.outside.ns, 'outside', GATEWAY_IP);
  plan.add(addAddr({ ns: netnsPath(s.outside.ns), addr: `${OUTSIDE_IP}/24`, dev: 'lo' }));
  const first = underlayMembers(s);
  return joinUnderlay(plan, first, first);
}

/**
 * The lab's pretend datacenter has static ARP: every namespace on the underlay (the outside world,
 * etcd members, Prometheus, nodes) holds a permanent neighbour entry for every other one, which the
 * lab installs as members join and removes as they leave. This is the lab's network, not Weft's
 * agent (a real datacenter's ARP is its own business). Why: the kernel keeps ONE neighbour table for
 * all namespaces, capped at net.ipv4.neigh.default.gc_thresh3 (1024, settable only in the root
 * namespace), and a 100-node lab resolving its underlay by ARP would need about 100² dynamic
 * entries; permanent entries are not counted against that cap (kernel ≥ 4.19).
 */
export interface UnderlayMember {
  ns: string;
  ip: string;
}

/** Every namespace with an eth0 on the switch that `s` records (pending nodes too). */
export function underlayMembers(s: LabState): UnderlayMember[] {
  return [
    { ns: s.outside.ns, ip: GATEWAY_IP },
    ...(s.backend === 'macvlan' ? [] : etcdMembers(s).map((m) => ({ ns: m.ns, ip: m.ip }))),
    ...(s.monitoring ? [{ ns: s.monitoring.ns, ip: s.monitoring.ip }] : []),
    ...s.nodes.map((n) => ({ ns: n.ns, ip: n.ip })),
  ];
}

/** The lab's underlay members, as its state records them now, whose namespaces exist. */
export const presentMembers = (s: LabState) => underlayMembers(readState(s.name)).filter((m) => existsSync(netnsPath(m.ns)));

/**
 * `joining` learn every member's MAC and every other member learns theirs. Entries in other members
 * tolerate a missing eth0 (a member still being plugged in makes its own entries when it joins, from
 * the state it reads then); `members` should be only those whose namespace exists.
 */
export function joinUnderlay(plan: Plan, members: UnderlayMember[], joining: UnderlayMember[]): Plan {
  const isJoining = new Set(joining.map((j) => j.ns));
  for (const j of joining) {
    const ns = netnsPath(j.ns);
    for (const m of members) if (m.ns !== j.ns) plan.add(setNeigh({ ns, dst: m.ip, mac: underlayMac(m.ip), dev: 'eth0' }));
  }
  for (const m of members) {
    if (isJoining.has(m.ns)) continue;
    const ns = netnsPath(m.ns);
    for (const j of joining) plan.add(setNeigh({ ns, dst: j.ip, mac: underlayMac(j.ip), dev: 'eth0', tolerate: 'missing' }));
  }
  return plan;
}

/** `leaving`'s entry goes from every other member (before its namespace goes). */
export function leaveUnderlay(plan: Plan, members: UnderlayMember[], leaving: UnderlayMember): Plan {
  for (const m of members) if (m.ns !== leaving.ns) plan.add(delNeigh({ ns: netnsPath(m.ns), dst: leaving.ip, dev: 'eth0', tolerate: 'missing' }));
  return plan;
}

/**
 * A node on the switch. Underlay mode adds what deployments add for macvlan pods, since a macvlan
 * child cannot talk to its parent: a shim of the node's own (weft-shim, 198.18.<index>.1) with a
 * route to its pods (198.18.<index>.0/24) through it.
 */
export function nodePlan(s: LabState, node: NodeState): Plan {
  const plan = new Plan();
  plugIn(plan, s, node.ns, node.port, node.ip, GATEWAY_IP);
  // As systemd sets it on hosts: ping without a raw socket (verify's node checks use ping sockets).
  plan.add(setSysctl({ ns: netnsPath(node.ns), key: 'net.ipv4.ping_group_range', value: '0 2147483647' }));
  if (s.backend === 'macvlan') {
    const p = netnsPath(node.ns);
    plan.add(
      addMacvlan({ ns: p, name: 'weft-shim', parent: 'eth0' }),
      addAddr({ ns: p, addr: `198.18.${node.index}.1/32`, dev: 'weft-shim' }),
      setLink({ ns: p, dev: 'weft-shim', up: true }),
      addRoute({ ns: p, dst: underlayPods(node), dev: 'weft-shim' }),
    );
  }
  return plan;
}

export const underlayPods = (node: NodeState) => `198.18.${node.index}.0/24`;

export const etcdLog = (s: LabState, m: EtcdMember) => join(labDir(s.name), `${m.name}.log`);

const peerUrl = (m: EtcdMember) => `http://${m.ip}:2380`;

/** One member of the lab's etcd cluster; every member is in --initial-cluster from the start. */
export function etcdArgv(s: LabState, m: EtcdMember): string[] {
  return [
    'etcd',
    '--name',
    m.name,
    '--data-dir',
    join(labDir(s.name), m.name),
    '--listen-client-urls',
    clientUrl(m),
    '--advertise-client-urls',
    clientUrl(m),
    '--listen-peer-urls',
    peerUrl(m),
    '--initial-advertise-peer-urls',
    peerUrl(m),
    '--initial-cluster',
    etcdMembers(s)
      .map((x) => `${x.name}=${peerUrl(x)}`)
      .join(','),
    '--initial-cluster-token',
    `weft-lab-${s.name}`,
    ...electionTiming(etcdMembers(s).length),
  ];
}

/**
 * A lone member elects itself only when its randomized election timeout (one to two timeouts, less
 * the ticks etcd fast-forwards at start) runs out: at 500 ms that was a third of a second of a
 * 3 x 2 lab's start. It has no peer to miss a heartbeat from, so its timeout can be short. A
 * cluster keeps timeouts that a loaded machine's scheduling delays do not trip.
 */
const electionTiming = (members: number) =>
  members === 1 ? ['--heartbeat-interval', '10', '--election-timeout', '100'] : ['--heartbeat-interval', '50', '--election-timeout', '500'];

/** flannel's net-conf.json for the lab, as `lab up` writes it to etcd (etcd.ts putNetworkConfig). */
export const networkConfig = (s: LabState) => JSON.stringify({ Network: POD_NETWORK, Backend: { Type: s.backend } });

/** The node's files: where its agent (or CNI server) keeps state and sockets, and its CNI config. */
export function nodeFiles(s: LabState, node: NodeState) {
  const dir = nodeDir(s.name, node.name);
  return {
    dir,
    subnetFile: join(dir, 'subnet.env'),
    cniSocket: join(dir, 'cni.sock'),
    statusSocket: join(dir, 'agent.sock'),
    conflist: join(dir, 'cni.conflist'),
    log: join(dir, s.backend === 'macvlan' ? 'cni.log' : 'agent.log'),
  };
}

/** Overlay: the node's weft agent. Underlay: a warm `weft cni serve` stands in (there is no lease to hold). */
export function nodeDaemonArgv(s: LabState, node: NodeState): string[] {
  const f = nodeFiles(s, node);
  if (s.backend === 'macvlan') return [process.execPath, WEFT, 'cni', 'serve', '--quiet', '--socket', f.cniSocket];
  return [
    process.execPath,
    ...AGENT_NODE,
    WEFT,
    'agent',
    '--node',
    node.name,
    '--iface',
    'eth0',
    '--etcd-endpoints',
    s.etcd.endpoint,
    '--subnet-file',
    f.subnetFile,
    '--state-dir',
    f.dir,
    '--cni-socket',
    f.cniSocket,
    '--metrics-listen',
    `${node.ip}:${AGENT_METRICS_PORT}`,
    '--dns-upstream',
    GATEWAY_IP,
  ];
}

/** The CNI config a runtime on the node would use. */
export function nodeConflist(s: LabState, node: NodeState): object {
  const f = nodeFiles(s, node);
  if (s.backend === 'macvlan') {
    const range = { subnet: '198.18.0.0/16', rangeStart: `198.18.${node.index}.2`, rangeEnd: `198.18.${node.index}.254`, gateway: GATEWAY_IP };
    return {
      cniVersion: '1.1.0',
      name: 'weft',
      plugins: [
        {
          type: 'weft',
          mode: 'macvlan',
          master: 'eth0',
          socket: f.cniSocket,
          ipam: { type: 'weft-ipam', dataDir: join(f.dir, 'ipam'), ranges: [[range]], routes: [{ dst: '0.0.0.0/0' }] },
          clusterDNS: [],
        },
      ],
    };
  }
  if (s.cniMode === 'routed') {
    // Bridgeless (routed.ts): a default route via the link-local gateway; hairpin works by routing.
    return {
      cniVersion: '1.1.0',
      name: 'weft',
      plugins: [{ type: 'weft', mode: 'routed', subnetFile: f.subnetFile, dataDir: join(f.dir, 'ipam'), socket: f.cniSocket }],
    };
  }
  // As kube-flannel's conflist: a default route through the bridge, and hairpin for services later;
  // and static neighbours between each pod and its node (the kernel's one ARP table: see joinUnderlay).
  return {
    cniVersion: '1.1.0',
    name: 'weft',
    plugins: [
      {
        type: 'weft',
        subnetFile: f.subnetFile,
        dataDir: join(f.dir, 'ipam'),
        socket: f.cniSocket,
        isDefaultGateway: true,
        hairpinMode: true,
        staticNeighbours: true,
      },
    ],
  };
}

export const OUTSIDE_POD = 'outside';

/** CNI_ARGS as kubelet passes them: the agent registers the pod under this namespace and name for Services. */
export const podCniArgs = (pod: { name: string; namespace?: string }) =>
  `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace ?? 'default'};K8S_POD_NAME=${pod.name}`;

/**
 * A node's runtime (workload.ts: one process serving every pod of the node) runs in a namespace of
 * its own, so that a node's agent killed or restarted leaves its pods serving, as on a real node. The
 * outside world's runs in the outside namespace itself, with the resolver the nodes' cluster DNS
 * forwards to (upstream.ts).
 */
export function runtimeOf(s: LabState, node: string): { ns: string; socket: string; log: string; lock: string; dns: boolean } {
  const outside = node === OUTSIDE_POD;
  const dir = outside ? podDir(s.name, OUTSIDE_POD) : nodeDir(s.name, node);
  return {
    ns: outside ? s.outside.ns : nsName(s.name, `${node}.pods`),
    socket: join(dir, 'pods.sock'),
    log: join(dir, 'pods.log'),
    lock: join(dir, 'pods.lock'),
    dns: outside,
  };
}

export const runtimeArgv = (r: { socket: string; dns: boolean }) => [
  process.execPath,
  ...RUNTIME_NODE,
  WORKLOAD,
  '--socket',
  r.socket,
  ...(r.dns ? ['--dns'] : []),
];

export function subnetOf(envFile: string): string | undefined {
  try {
    return /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(envFile, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** The pods `lab up` makes: pod-<node><a, b, ...>, the first of each node with a sidecar. */
export function upPods(nodes: string[], perNode: number): { pod: string; node: string; sidecar: boolean }[] {
  return nodes.flatMap((node, i) => Array.from({ length: perNode }, (_, j) => ({ pod: `pod-${i + 1}${String.fromCharCode(97 + j)}`, node, sidecar: j === 0 })));
}

/** A fresh lab's record, before anything of it exists; `etcdMembers` members (1 unless asked). */
export function newLab(name: string, backend: LabState['backend'], members = 1, cniMode: CniMode = 'bridge'): LabState {
  const all = Array.from({ length: members }, (_, i) => {
    const role = i === 0 ? 'etcd' : `etcd${i + 1}`;
    return { name: role, ns: nsName(name, role), ip: etcdIp(i + 1) };
  });
  return {
    name,
    backend,
    createdAt: new Date().toISOString(),
    building: true,
    etcd: { ns: all[0]!.ns, ip: all[0]!.ip, endpoint: all.map(clientUrl).join(','), ...(members > 1 ? { members: all } : {}) },
    outside: { ns: nsName(name, 'outside'), ip: OUTSIDE_IP, gateway: GATEWAY_IP },
    underlay: { ns: nsName(name, 'underlay') },
    nodes: [],
    pods: [],
    ...(cniMode === 'routed' ? { cniMode } : {}),
  };
}

/** argv as a shell would take it, for the dry run. */
export const shell = (argv: string[]) => argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
