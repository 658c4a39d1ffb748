import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  etcdArgv,
  networkConfig,
  newLab,
  nodeConflist,
  nodeDaemonArgv,
  nodeFiles,
  nodeIp,
  nodePlan,
  OUTSIDE_POD,
  podCniArgs,
  portName,
  shell,
  switchPlan,
  underlayPods,
  runtimeArgv,
  runtimeOf,
  upPods,
} from './build.js';
import { DEFAULT_CLUSTER_DNS } from '../agent/dns.js';
import { demoManifests, kubeDnsManifest, manifestText } from './demo.js';
import { agentTargets, forwarderArgv, monitoringFiles, monitoringPlan, newMonitoring, prometheusArgv, prometheusConfig } from './monitoring.js';
import { resolvConfPath } from './resolv.js';
import { APP_PORT, SIDECAR_PORT } from './workload.js';
import { etcdMembers, labDir, nsName, readState, statePath, type CniMode, type LabBackend, type NodeState } from './state.js';

/**
 * `lab up --dry-run`: what `up` would make, in the order it would make it (namespaces, the kernel
 * plans rendered as commands, the processes with their argv, the files), built from the same plans
 * and argv as `up` itself. Changes nothing.
 */
export function planUp(o: {
  name: string;
  nodes: number;
  podsPerNode: number;
  backend: LabBackend;
  monitoring?: boolean;
  etcdMembers?: number;
  cniMode?: CniMode;
}): string {
  if (existsSync(statePath(o.name))) {
    const s = readState(o.name);
    return `lab "${o.name}" exists (${s.backend}, ${s.nodes.length} nodes, ${s.pods.length} pods): lab up would restart whichever of its processes died (etcd, agents, pod containers, Prometheus) with their saved state, and remove what interrupted commands left half made${o.monitoring && !s.monitoring ? '; --monitoring would add Prometheus, scraping its agents' : ''}; --nodes, --pods-per-node, --backend and --cni-mode would not apply.`;
  }
  const s = newLab(o.name, o.backend, o.etcdMembers, o.cniMode);
  const overlay = o.backend !== 'macvlan';
  const nodes: NodeState[] = Array.from({ length: o.nodes }, (_, i) => ({
    name: `node${i + 1}`,
    ns: nsName(o.name, `node${i + 1}`),
    ip: nodeIp(i + 1),
    index: i + 1,
    port: portName(i + 1),
  }));
  const pods = upPods(
    nodes.map((n) => n.name),
    o.podsPerNode,
  );
  const bg = (ns: string, argv: string[]) => `ip netns exec ${ns} ${shell(argv)} &`;
  const lines = [
    `weft lab up --dry-run: lab "${o.name}", ${o.backend}${s.cniMode === 'routed' ? ', routed pods' : ''}, ${o.nodes} nodes, ${pods.length} pods; nothing was changed.`,
    '',
    `# state and logs in ${labDir(o.name)}; plugins installed in ${join(labDir(o.name), 'bin')}`,
    '',
    '# the underlay switch, the outside world' +
      (overlay ? ` and etcd (${etcdMembers(s).length === 1 ? 'one member' : `${etcdMembers(s).length} members`})` : ''),
    ...[s.underlay.ns, s.outside.ns, ...(overlay ? etcdMembers(s).map((m) => m.ns) : [])].map((ns) => `ip netns add ${ns}`),
    switchPlan(s).render(),
    bg(s.outside.ns, runtimeArgv(runtimeOf(s, OUTSIDE_POD))),
    `# ${OUTSIDE_POD}: its runtime runs the outside world's app (port ${APP_PORT}, TCP and UDP)`,
    ...(overlay
      ? [
          ...etcdMembers(s).map((m) => bg(m.ns, etcdArgv(s, m))),
          `# once etcd serves: /coreos.com/network/config = ${networkConfig(s)} (if absent), over etcd's JSON gateway from ${s.etcd.ns}, as weft network init would write it`,
        ]
      : []),
  ];
  const m = o.monitoring ? newMonitoring(o.name) : undefined;
  if (m) {
    s.monitoring = m;
    const f = monitoringFiles(o.name);
    lines.push(
      '',
      `# monitoring: Prometheus on ${m.ip}:${m.port}, reached from this namespace through ${m.socket}; ${f.targets} lists every node's agent (rewritten as nodes join and leave)`,
      `ip netns add ${m.ns}`,
      monitoringPlan(s, m).render(),
      `# ${f.config}:`,
      ...prometheusConfig(s)
        .trimEnd()
        .split('\n')
        .map((l) => `#   ${l}`),
      bg(m.ns, prometheusArgv(s, m)),
      bg(m.ns, forwarderArgv(m)),
    );
  }
  for (const n of nodes) {
    s.nodes.push(n);
    lines.push(
      '',
      `# ${n.name} at ${n.ip}, switch port ${n.port}, pods ${overlay ? 'in the subnet its agent leases' : `in ${underlayPods(n)}`}`,
      `ip netns add ${n.ns}`,
      nodePlan(s, n).render(),
      bg(n.ns, nodeDaemonArgv(s, n)),
      `# ${n.name}'s runtime: one process for all its pods, in a namespace of its own`,
      `ip netns add ${runtimeOf(s, n.name).ns}`,
      bg(runtimeOf(s, n.name).ns, runtimeArgv(runtimeOf(s, n.name))),
      `# ${nodeFiles(s, n).conflist}: ${JSON.stringify(nodeConflist(s, n))}`,
    );
  }
  if (m) lines.push('', `# ${monitoringFiles(o.name).targets}: ${JSON.stringify(agentTargets(s))}`);
  if (overlay) {
    lines.push(
      '',
      `# the Service registry (etcd prefix /weft), written from ${s.etcd.ns}: kube-system/kube-dns first, then each pod's spec (before the pods) and the Service echo over them (after)`,
      manifestText([kubeDnsManifest(DEFAULT_CLUSTER_DNS), ...demoManifests(pods)]),
    );
  }
  if (pods.length) lines.push('', "# pods: a namespace each, CNI ADD through the node's conflist (eth0), then the containers, run by the node's runtime");
  for (const p of pods) {
    const ns = nsName(o.name, p.pod);
    const node = nodes.find((n) => n.name === p.node)!;
    lines.push(
      `ip netns add ${ns}`,
      `CNI ADD ${p.pod} on ${p.node}: ${nodeFiles(s, node).conflist}, netns ${ns}, ifname eth0, CNI_ARGS ${podCniArgs({ name: p.pod })}`,
      ...(overlay ? [`# ${resolvConfPath(ns)}: the ADD result's dns (nameserver, search, options)`] : []),
    );
    const containers = p.sidecar ? `app (port ${APP_PORT}, TCP and UDP) and sidecar (127.0.0.1:${SIDECAR_PORT})` : `app (port ${APP_PORT}, TCP and UDP)`;
    lines.push(`# ${p.node}'s runtime runs ${p.pod}: ${containers}, sockets opened in ${ns}`);
  }
  return lines.join('\n');
}
