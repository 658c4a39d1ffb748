import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { formatLabels, formatPorts } from '../lab/registry.js';
import type { Backend } from '../lab/lab.js';
import type { LabView } from '../lab/services.js';
import { LAB_SIZE, readState, validateLabName, validateNodeName, validatePodName, type CniMode, type LabState } from '../lab/state.js';
import { JSON_OPTION, type Args, type CommandSpec, type GroupSpec, type OptionSpec } from './command.js';
import { table } from './format.js';
import { interruptSignal, print, printJson, progressTo, warn } from './output.js';
import type { MonitoringStatus } from '../lab/monitoring.js';
import type { Endpoint } from '../service/types.js';
import { UsageError } from './usage.js';

/** The lab library, loaded when a command runs (help and usage errors need none of it). */
const lab = () => import('../lab/lab.js');

const NAME: OptionSpec = { name: 'name', value: 'LAB', default: 'weft', check: validateLabName, description: 'which lab' };

function summary(s: LabState): string {
  const svc = s.service;
  return [
    table(
      ['node', 'public IP', 'pod subnet', 'mode'],
      s.nodes.map((n) => [n.name, n.ip, n.pending ? 'pending' : (n.subnet ?? '?'), s.backend]),
    ),
    '',
    table(
      ['pod', 'node', 'IP', 'containers'],
      s.pods.map((p) => [p.name, p.node, p.pending ? 'pending' : p.ip, p.containers.join('+')]),
    ),
    ...(svc ? ['', table(['service', 'cluster IP', 'ports', 'selector'], [[`${svc.namespace}/${svc.name}`, svc.clusterIP, svc.ports, svc.selector]])] : []),
  ].join('\n');
}

/** Where the lab's Prometheus is, whether it answers, and how to reach it from here. */
function monitoringLine(s: LabState, st: MonitoringStatus): string {
  const m = s.monitoring!;
  const flag = s.name === 'weft' ? '' : ` --name ${s.name}`;
  if (!st.ready) return `Prometheus ${m.ip}:${m.port} in ${m.ns} is NOT answering; weft lab up${flag} restarts it`;
  const agents = st.agents ? `, ${st.agents.up}/${st.agents.total} agents up` : '';
  return [
    `Prometheus ${m.ip}:${m.port} in ${m.ns} (ready${agents}); from this machine through its socket:`,
    `  curl -s --unix-socket ${m.socket} 'http://prometheus/api/v1/query?query=up'`,
  ].join('\n');
}

function nextSteps(s: LabState): string {
  const flag = s.name === 'weft' ? '' : ` --name ${s.name}`;
  const [a, b] = [s.pods[0], s.pods.find((p) => p.node !== s.pods[0]?.node) ?? s.pods[1]];
  return [
    'Next:',
    `  weft verify${flag}                          check the Kubernetes network model`,
    ...(a && b ? [`  weft lab exec${flag} ${a.name} -- ping -c 3 ${b.name}    names resolve to IPs`] : []),
    ...(s.service && a ? [`  weft lab exec${flag} ${a.name} -- curl -s ${s.service.clusterIP}    the Service ${s.service.name}: one of its pods answers`] : []),
    ...(s.service && a ? [`  weft lab exec${flag} ${a.name} -- getent hosts ${s.service.name}    its name, from the node's cluster DNS`] : []),
    ...(s.service ? [`  weft lab get endpoints${flag}                 the pods behind each Service`] : []),
    `  weft lab exec${flag} ${s.nodes[0]?.name ?? 'node1'} -- ip route            a node's routes`,
    `  weft lab status${flag}                      this table again`,
    `  weft lab down${flag}                        remove everything`,
  ].join('\n');
}

/** Prints `value` as JSON with --json, else the text. */
function result(a: Args, value: unknown, text: () => string): number {
  if (a.bool('json')) printJson(value);
  else print(text());
  return 0;
}

const FILE: OptionSpec = {
  name: 'filename',
  short: 'f',
  value: 'FILE',
  required: true,
  brief: true,
  description: 'Kubernetes manifests (YAML or JSON; Service, EndpointSlice, Pod); - reads stdin',
};

const readManifest = (file: string) => {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
};

const KINDS = ['pods', 'services', 'endpoints'] as const;
const ref = (x: { kind: string; namespace: string; name: string }) =>
  `${x.kind.toLowerCase()}/${x.name}${x.namespace === 'default' ? '' : ` in ${x.namespace}`}`;

function viewTable(kind: (typeof KINDS)[number], v: LabView): string {
  if (kind === 'pods') {
    return table(
      ['namespace/name', 'node', 'IP', 'ready', 'labels'],
      v.pods.map((p) => [
        `${p.namespace}/${p.name}`,
        p.node ?? p.lab?.node ?? '-',
        p.ip ?? 'none',
        p.terminating ? 'terminating' : String(p.ready),
        formatLabels(p.labels) || '-',
      ]),
    );
  }
  if (kind === 'services') {
    return table(
      ['namespace/name', 'type', 'cluster IP', 'ports', 'selector', 'endpoints'],
      v.services.map((x) => [
        `${x.namespace}/${x.name}`,
        x.type,
        x.clusterIP ?? x.externalName ?? '-',
        formatPorts(x) || '-',
        x.selector ? formatLabels(x.selector) || '(all)' : '(slices)',
        String(x.endpoints.filter((e) => e.conditions.ready).length),
      ]),
    );
  }
  const state = (e: Endpoint) => (e.conditions.ready ? '' : e.conditions.serving ? ' (terminating)' : ' (not ready)');
  return table(
    ['namespace/name', 'endpoints'],
    v.services.map((x) => [
      `${x.namespace}/${x.name}`,
      x.endpoints.map((e) => `${e.ip}:${[...new Set(e.ports.map((p) => p.port))].join(',')}${state(e)}`).join(' ') || '<none>',
    ]),
  );
}

export const labGroup: GroupSpec = { path: ['lab'], summary: 'a whole cluster network on this machine, in network namespaces' };
export const labPodGroup: GroupSpec = { path: ['lab', 'pod'], summary: 'add or remove a pod through the CNI plugin' };
export const labNodeGroup: GroupSpec = { path: ['lab', 'node'], summary: 'a node joins or leaves the lab' };

export const labCommands: CommandSpec[] = [
  {
    path: ['lab', 'up'],
    summary: 'a cluster network on this machine, in namespaces',
    options: [
      { name: 'nodes', value: 'N', int: LAB_SIZE.nodes, default: '3', brief: true, description: 'nodes, each with its own weft agent' },
      { name: 'pods-per-node', value: 'M', int: LAB_SIZE.podsPerNode, default: '2', brief: true, description: 'pods on each node' },
      {
        name: 'backend',
        value: 'TYPE',
        choices: ['vxlan', 'host-gw', 'udp'],
        default: 'vxlan',
        brief: true,
        description: 'how the agents carry pod traffic between nodes',
      },
      {
        name: 'mode',
        value: 'MODE',
        choices: ['overlay', 'underlay'],
        default: 'overlay',
        description: "overlay: pods behind the agents' backend; underlay: macvlan pods on the node network",
      },
      {
        name: 'cni-mode',
        value: 'MODE',
        choices: ['bridge', 'routed'],
        default: 'bridge',
        description: 'overlay labs: how the CNI plugin wires pods: bridge (a veth into cni0) or routed (no bridge: a /32 route per pod, as Calico)',
      },
      { name: 'monitoring', description: 'also run Prometheus in the lab, scraping every agent (on a lab that exists: add it)' },
      {
        name: 'etcd-members',
        value: 'N',
        int: LAB_SIZE.etcdMembers,
        default: '1',
        description:
          'members of the etcd cluster, each in its own namespace; the agents get every client URL and fail over between them (3 survives the loss of one)',
      },
      NAME,
      { name: 'dry-run', description: 'print the namespaces, processes and kernel ops it would make; change nothing' },
      JSON_OPTION,
    ],
    details:
      'Overlay labs: the pods carry the label app=echo and one Service, echo, spreads over them (weft lab get services). On a lab whose processes died, brings them back with their saved state. SIGINT or SIGTERM removes what this run made.',
    run: async (a) => {
      const name = a.str('name')!;
      if (a.bool('monitoring') && a.str('mode') === 'underlay')
        throw new UsageError('--monitoring needs an overlay lab: underlay labs have no agents to scrape');
      if (a.num('etcd-members')! > 1 && a.str('mode') === 'underlay') throw new UsageError('--etcd-members needs an overlay lab: underlay labs have no etcd');
      if (a.str('cni-mode') === 'routed' && a.str('mode') === 'underlay')
        throw new UsageError('--cni-mode routed needs an overlay lab: underlay labs wire macvlan pods');
      const say = progressTo(a.bool('json'));
      const { neighbourRoom, up } = await lab();
      const room = a.bool('dry-run') ? undefined : neighbourRoom(a.num('nodes')!, a.num('pods-per-node')!, a.str('mode') === 'underlay');
      if (room) warn(room);
      const options = {
        name,
        nodes: a.num('nodes')!,
        podsPerNode: a.num('pods-per-node')!,
        backend: a.str('mode') === 'underlay' ? ('macvlan' as const) : (a.str('backend') as Backend),
        monitoring: a.bool('monitoring'),
        etcdMembers: a.num('etcd-members')!,
        cniMode: a.str('cni-mode') as CniMode,
        progress: (step: string, ms: number) => say(` ✓ ${step} (${(ms / 1000).toFixed(1)} s)`),
      };
      if (a.bool('dry-run')) {
        const plan = await up({ ...options, dryRun: true });
        return result(a, { lab: name, plan }, () => plan);
      }
      const started = performance.now();
      say(`Creating lab "${name}"`);
      const s = await up({ ...options, signal: interruptSignal() });
      const where = s.monitoring ? `\n\n${monitoringLine(s, { ready: true })}` : '';
      return result(
        a,
        s,
        () => `Lab "${s.name}" is ready in ${((performance.now() - started) / 1000).toFixed(1)} s\n\n${summary(s)}${where}\n\n${nextSteps(s)}`,
      );
    },
  },
  {
    path: ['lab', 'status'],
    summary: "the lab's nodes, subnets and pods",
    details: "With monitoring, says whether the lab's Prometheus answers and how many agents it scrapes (--json: monitoring.status).",
    options: [NAME, JSON_OPTION],
    run: async (a) => {
      const s = readState(a.str('name')!);
      const etcd = s.backend === 'macvlan' ? '' : `, etcd ${s.etcd.endpoint}`;
      const mon = s.monitoring && (await (await import('../lab/monitoring.js')).monitoringStatus(s));
      const value = s.monitoring && mon ? { ...s, monitoring: { ...s.monitoring, status: mon } } : s;
      return result(
        a,
        value,
        () =>
          `lab "${s.name}" (${s.backend}${s.cniMode === 'routed' ? ', routed pods' : ''})${etcd}, outside ${s.outside.ip}\n\n${summary(s)}${mon ? `\n\n${monitoringLine(s, mon)}` : ''}`,
      );
    },
  },
  {
    path: ['lab', 'down'],
    summary: 'remove the lab: every process and namespace it made',
    options: [NAME, JSON_OPTION],
    run: async (a) => {
      const name = a.str('name')!;
      const gone = await (await lab()).down(name);
      return result(a, { lab: name, removed: gone }, () =>
        gone.length ? `removed lab "${name}" (${gone.length} namespaces)` : `no lab "${name}" was running; nothing to remove`,
      );
    },
  },
  {
    path: ['lab', 'exec'],
    summary: 'run a command in a node or pod (names become IPs)',
    positionals: [{ name: 'NODE|POD' }],
    passthrough: 'COMMAND',
    details: "Exits with the command's exit status.",
    options: [NAME],
    run: (a) => {
      const s = readState(a.str('name')!);
      const target = a.positionals[0]!;
      const where = s.nodes.find((n) => n.name === target) ?? s.pods.find((p) => p.name === target);
      if (!where) throw new UsageError(`lab "${s.name}" has no node or pod "${target}"; it has ${[...s.nodes, ...s.pods].map((x) => x.name).join(', ')}`);
      // Names of pods and nodes in the command become their IPs, as in Mininet.
      const ips = new Map<string, string>([...s.nodes.map((n) => [n.name, n.ip] as const), ...s.pods.map((p) => [p.name, p.ip] as const)]);
      const r = spawnSync('ip', ['netns', 'exec', where.ns, ...a.rest.map((x) => ips.get(x) ?? x)], { stdio: 'inherit' });
      return r.status ?? 1;
    },
  },
  {
    path: ['lab', 'pod', 'add'],
    summary: 'add a pod on a node, through the CNI plugin',
    positionals: [{ name: 'NAME', check: validatePodName }],
    details: 'SIGINT or SIGTERM removes what it made so far.',
    options: [{ name: 'node', value: 'NODE', required: true, description: 'the node it runs on' }, NAME, JSON_OPTION],
    run: async (a) => {
      const { addPod } = await lab();
      const p = await addPod(readState(a.str('name')!), a.positionals[0]!, a.str('node')!, { signal: interruptSignal() });
      return result(a, p, () => `pod ${p.name} is up on ${p.node} with IP ${p.ip}`);
    },
  },
  {
    path: ['lab', 'pod', 'rm'],
    summary: 'remove a pod and every trace of it (CNI DEL)',
    positionals: [{ name: 'NAME' }],
    options: [NAME, JSON_OPTION],
    run: async (a) => {
      const pod = a.positionals[0]!;
      const { removePod } = await lab();
      await removePod(readState(a.str('name')!), pod);
      return result(a, { pod, removed: true }, () => `pod ${pod} removed`);
    },
  },
  {
    path: ['lab', 'node', 'add'],
    summary: 'a node joins; the others converge',
    positionals: [{ name: 'NAME', optional: true, check: validateNodeName }],
    details: 'NAME defaults to the next nodeN. SIGINT or SIGTERM removes what it made so far.',
    options: [NAME, JSON_OPTION],
    run: async (a) => {
      const { addNode } = await lab();
      const s = readState(a.str('name')!);
      const name = a.positionals[0] ?? `node${Math.max(0, ...s.nodes.map((n) => Number(n.name.replace(/\D/g, '')) || 0)) + 1}`;
      const n = await addNode(s, name, { signal: interruptSignal() });
      return result(a, n, () => `node ${n.name} joined at ${n.ip} with subnet ${n.subnet}`);
    },
  },
  {
    path: ['lab', 'node', 'rm'],
    summary: 'a node leaves: its agent, pods and lease go',
    positionals: [{ name: 'NAME' }],
    options: [NAME, JSON_OPTION],
    run: async (a) => {
      const node = a.positionals[0]!;
      const { removeNode } = await lab();
      await removeNode(readState(a.str('name')!), node);
      return result(a, { node, removed: true }, () => `node ${node} removed`);
    },
  },
  {
    path: ['lab', 'apply'],
    summary: 'Services, EndpointSlices and Pods from Kubernetes manifests',
    details:
      "Services and EndpointSlices go to the lab's registry; a Pod's labels and ports are written first, then the pod is made through the CNI plugin on spec.nodeName (else the node with the fewest pods), listening on its containerPorts (TCP and UDP) besides 80. Overlay labs only.",
    options: [FILE, NAME, JSON_OPTION],
    run: async (a) => {
      const { applyManifests } = await import('../lab/services.js');
      const file = a.str('filename')!;
      const results = await applyManifests(a.str('name')!, readManifest(file), file, { signal: interruptSignal() });
      return result(a, results, () => results.map((r) => `${ref(r)} ${r.action}${r.ip ? ` on ${r.node} with IP ${r.ip}` : ''}`).join('\n'));
    },
  },
  {
    path: ['lab', 'delete'],
    summary: 'remove what manifests name: pods (through CNI DEL), Services, EndpointSlices',
    options: [FILE, NAME, JSON_OPTION],
    run: async (a) => {
      const { deleteManifests } = await import('../lab/services.js');
      const file = a.str('filename')!;
      const results = await deleteManifests(a.str('name')!, readManifest(file), file);
      return result(a, results, () => results.map((r) => `${ref(r)} ${r.deleted ? 'deleted' : 'not found'}`).join('\n'));
    },
  },
  {
    path: ['lab', 'get'],
    summary: "the lab's pods, Services or endpoints, as the registry holds them",
    positionals: [
      {
        name: 'KIND',
        check: (v) => {
          if (!(KINDS as readonly string[]).includes(v)) throw new Error(`lab get shows ${KINDS.join(', ')}, not "${v}"`);
        },
      },
    ],
    details: 'KIND is pods, services or endpoints. Endpoints count pods only on nodes that hold a lease, as the agents program them.',
    options: [
      { name: 'output', short: 'o', value: 'FORMAT', choices: ['json', 'yaml'], description: 'the records as JSON (as --json) or YAML, instead of a table' },
      { name: 'namespace', short: 'n', value: 'NS', description: 'only this Kubernetes namespace (default: all)' },
      NAME,
      JSON_OPTION,
    ],
    run: async (a) => {
      const { labView } = await import('../lab/services.js');
      const kind = a.positionals[0] as (typeof KINDS)[number];
      const ns = a.str('namespace');
      const all = await labView(readState(a.str('name')!));
      const v = { pods: all.pods.filter((p) => !ns || p.namespace === ns), services: all.services.filter((x) => !ns || x.namespace === ns) };
      const value =
        kind === 'pods' ? v.pods : kind === 'services' ? v.services : v.services.map((x) => ({ namespace: x.namespace, name: x.name, endpoints: x.endpoints }));
      const output = a.bool('json') ? 'json' : a.str('output');
      if (output === 'json') printJson(value);
      else if (output === 'yaml') print((await import('yaml')).stringify(value).trimEnd());
      else print(viewTable(kind, v));
      return 0;
    },
  },
  {
    path: ['verify'],
    summary: 'check the Kubernetes network model on a lab',
    details: 'Exits 1 when a check fails.',
    options: [
      NAME,
      { name: 'all-pairs', description: 'check every ordered pod pair (above 24 pods verify samples: every pod, and every node pair)' },
      JSON_OPTION,
    ],
    run: async (a) => {
      const { formatVerify, tally, verify } = await import('../lab/verify.js');
      const say = progressTo(a.bool('json'));
      const { state, results, coverage } = await verify(a.str('name')!, {
        allPairs: a.bool('all-pairs'),
        progress: (step, ms, failed) => say(` ${failed ? '✗' : '✓'} ${step}${failed ? `, ${failed} failed` : ''} (${(ms / 1000).toFixed(1)} s)`),
      });
      const counts = tally(results);
      result(a, { lab: state.name, ...counts, coverage, results }, () => formatVerify(state, results, coverage));
      return counts.failed === 0 ? 0 : 1;
    },
  },
];
