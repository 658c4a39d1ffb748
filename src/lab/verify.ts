import { addrs, links } from '../kernel/state.js';
import { netnsPath } from '../kernel/netns.js';
import { readStatus } from '../agent/status.js';
import { nodeFiles } from './build.js';
import { storedLeases, etcdHealthy, type StoredLease } from './etcd.js';
import { controlSocket, execIn, inBatches, readState, type LabState, type NodeState, type PodState } from './lab.js';
import { socketAnswers } from './procs.js';
import { dnsChecks } from './verify-dns.js';
import { serviceChecks } from './verify-services.js';
import { APP_PORT, ping as pingIn, probe, probeFrom, secondTry, SIDECAR_PORT, type Probe } from './workload.js';

/** One check of the Kubernetes network model, with the evidence for its verdict. */
export interface CheckResult {
  group: string;
  check: string;
  from: string;
  to: string;
  ok: boolean;
  /** Not applicable to this lab (e.g. Services in underlay mode): neither passed nor failed. */
  skipped?: boolean;
  evidence: string;
  /** A pod → pod probe that timed out and was sent once more: the first try's error. */
  retried?: string;
}

type Pair = { src: PodState; dst: PodState };

/** Up to this many pods, verify checks every ordered pair; above, a sample (`--all-pairs` forces all). */
export const ALL_PAIRS_UP_TO = 24;

/** What verify checked of the pod pairs: all of them, or which sample. */
export interface Coverage {
  sampled: boolean;
  pairs: { sameNode: number; acrossNodes: number };
  /** Said in verify's output. */
  note: string;
}

const byNode = (s: LabState) => {
  const m = new Map<string, PodState[]>();
  for (const n of s.nodes) m.set(n.name, []);
  for (const p of s.pods) m.get(p.node)?.push(p);
  return [...m.values()].filter((pods) => pods.length > 0);
};

/**
 * The pod pairs to check. All ordered pairs in a small lab (or with `allPairs`). Otherwise each pod
 * checks the next pod on its node, and the pods of each node share out the other nodes among
 * them (pod k of node i takes nodes i+1+k, i+1+k+m, ... where m is its node's pod count), so that
 * every ordered node pair is covered once, with the target pod rotating over the other node's pods:
 * ceil((nodes-1)/m) peers across nodes per pod instead of all pods, and at least one.
 */
export function podPairs(s: LabState, allPairs = false): { same: Pair[]; across: Pair[]; coverage: Coverage } {
  if (allPairs || s.pods.length <= ALL_PAIRS_UP_TO) {
    const same: Pair[] = [];
    const across: Pair[] = [];
    for (const src of s.pods) for (const dst of s.pods) if (src !== dst) (src.node === dst.node ? same : across).push({ src, dst });
    const why = allPairs && s.pods.length > ALL_PAIRS_UP_TO ? ' (--all-pairs)' : '';
    return { same, across, coverage: { sampled: false, pairs: { sameNode: same.length, acrossNodes: across.length }, note: `every ordered pod pair${why}` } };
  }
  const groups = byNode(s);
  const same: Pair[] = [];
  const across: Pair[] = [];
  for (const [i, pods] of groups.entries()) {
    const m = pods.length;
    for (const [k, src] of pods.entries()) {
      if (m > 1) same.push({ src, dst: pods[(k + 1) % m]! });
      const others = groups.length - 1;
      // Pods beyond the number of other nodes still take one: every pod crosses nodes.
      for (let t = 0, j = k; others > 0 && (t === 0 || j < others); t++, j += m) {
        const other = groups[(i + 1 + (j % others)) % groups.length]!;
        across.push({ src, dst: other[(k + t) % other.length]! });
      }
    }
  }
  const all = s.pods.length * (s.pods.length - 1);
  const perPod = Math.ceil((groups.length - 1) / Math.min(...groups.map((g) => g.length)));
  const note =
    `sampled ${same.length + across.length} of ${all} ordered pod pairs: each pod → the next pod on its node, and up to ${perPod} pod${perPod === 1 ? '' : 's'} ` +
    `on other nodes so that every ordered pair of the ${groups.length} nodes is covered (--all-pairs checks every pair)`;
  return { same, across, coverage: { sampled: true, pairs: { sameNode: same.length, acrossNodes: across.length }, note } };
}

const label = (p: PodState) => `${p.name} ${p.ip}`;

async function podProbe(s: LabState, src: PodState, probe: Probe) {
  return probeFrom(controlSocket(s.name, src.name, 'app'), probe);
}

async function ping(ns: string, ip: string, extra: string[] = []): Promise<{ ok: boolean; text: string }> {
  try {
    const r = await execIn(ns, ['ping', '-n', '-c', '1', '-W', '2', ...extra, ip]);
    return { ok: true, text: /time=([\d.]+ ms)/.exec(r.stdout)?.[1] ?? 'reply' };
  } catch (e) {
    const text = String((e as Error & { stderr?: string }).stderr ?? (e as Error).message).trim();
    return { ok: false, text: text.split('\n').pop() ?? text };
  }
}

/** Sources at once: each sends all its pairs' probes in one request to its runtime, which runs them together. */
const SOURCES_AT_ONCE = 32;
const PROTOS = ['tcp', 'udp', 'icmp'] as const;
/** Single checks at once: enough to hide each one's latency, few enough for two cores. */
const CHECKS_AT_ONCE = 16;
/** A node's own probes wait longer than a pod's 2 s: verify opens them from its own process, beside its other work. */
const NODE_PROBE_MS = 3000;

async function podToPod(s: LabState, group: string, list: Pair[]): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const bySrc = new Map<PodState, PodState[]>();
  for (const { src, dst } of list) bySrc.set(src, [...(bySrc.get(src) ?? []), dst]);
  await inBatches([...bySrc], SOURCES_AT_ONCE, async ([src, dsts]) => {
    const checks = dsts.flatMap((dst) =>
      PROTOS.map((proto) => ({ dst, probe: proto === 'icmp' ? { proto, host: dst.ip } : { proto, host: dst.ip, port: APP_PORT } })),
    );
    const control = controlSocket(s.name, src.name, 'app');
    const probes = checks.map((c) => c.probe);
    const results = await secondTry(probes, await probeFrom(control, probes), (again) => probeFrom(control, again));
    for (const [i, { dst, probe }] of checks.entries()) {
      const { result: r, retried } = results[i]!;
      let ok = r.ok;
      let evidence = r.ok ? `echo reply in ${r.ms.toFixed(3)} ms` : r.error;
      if (r.ok && 'seen' in r) {
        ok = r.seen.pod === dst.name && r.seen.client === src.ip;
        evidence = `${r.seen.pod} answered and saw the client as ${r.seen.client}${r.seen.client === src.ip ? ' (no NAT)' : ` (expected ${src.ip})`}`;
      }
      if (retried) evidence += `; on a second try, after: ${retried}`;
      out.push({ group, check: probe.proto, from: label(src), to: label(dst), ok, evidence, ...(retried ? { retried } : {}) });
    }
  });
  return out;
}

/** node → pod over TCP and ICMP, from sockets made in the node's namespace (no process per check). */
async function nodeToPod(s: LabState, node: NodeState, pod: PodState): Promise<CheckResult[]> {
  const same = pod.node === node.name;
  const group = same ? 'node → pod, same node' : 'node → pod, other node';
  // A macvlan child never hears its parent: the node reaches its own pods only through a shim.
  const why = s.backend === 'macvlan' && same ? ' (macvlan: a node reaches its own pods only through its weft-shim interface; is it there?)' : '';
  const ns = netnsPath(node.ns);
  const [tcp, icmp] = await Promise.all([
    probe(ns, { proto: 'tcp', host: pod.ip, port: APP_PORT, timeoutMs: NODE_PROBE_MS }),
    pingIn(ns, { proto: 'icmp', host: pod.ip, timeoutMs: NODE_PROBE_MS }),
  ]);
  const from = `${node.name} ${node.ip}`;
  return [
    {
      group,
      check: 'tcp',
      from,
      to: label(pod),
      ok: tcp.ok && tcp.seen.pod === pod.name,
      evidence: tcp.ok ? `${tcp.seen.pod} answered and saw the client as ${tcp.seen.client}` : `no answer: ${tcp.error}${why}`,
    },
    {
      group,
      check: 'icmp',
      from,
      to: label(pod),
      ok: icmp.ok,
      evidence: icmp.ok ? `echo reply in ${icmp.ms.toFixed(3)} ms` : `${icmp.error}${why}`,
    },
  ];
}

async function selfIp(pod: PodState, seenAs: Map<string, Set<string>>): Promise<CheckResult> {
  const own = (await addrs(netnsPath(pod.ns), 'eth0').catch(() => [])).filter((a) => a.family === 4).map((a) => a.address);
  const others = [...(seenAs.get(pod.name) ?? [])];
  const ok = own.includes(pod.ip) && others.length > 0 && others.every((ip) => ip === pod.ip);
  return {
    group: 'pod sees its own IP',
    check: 'ip',
    from: pod.name,
    to: pod.name,
    ok,
    evidence: `eth0 has ${own.join(', ') || 'no IPv4 address'}; other pods saw it as ${others.join(', ') || 'nothing (no pod-to-pod check reached it)'}`,
  };
}

async function localhost(s: LabState, pod: PodState): Promise<CheckResult> {
  const r = await podProbe(s, pod, { proto: 'tcp', host: '127.0.0.1', port: SIDECAR_PORT });
  const ok = r.ok && r.seen.pod === pod.name && r.seen.container === 'sidecar';
  return {
    group: 'containers in one pod share localhost',
    check: 'tcp',
    from: `${pod.name}/app`,
    to: `${pod.name}/sidecar 127.0.0.1:${SIDECAR_PORT}`,
    ok,
    evidence: r.ok ? `${r.seen.pod}/${r.seen.container} answered on localhost` : r.error,
  };
}

/** Overlay pods leave masqueraded as their node; underlay pods are on the network and keep their own address. */
async function egress(s: LabState, pod: PodState): Promise<CheckResult> {
  const node = s.nodes.find((n) => n.name === pod.node)!;
  const underlay = s.backend === 'macvlan';
  const [expected, who] = underlay ? [pod.ip, 'its own IP: pods sit on the underlay'] : [node.ip, `${node.name}'s IP`];
  const r = await podProbe(s, pod, { proto: 'tcp', host: s.outside.ip, port: APP_PORT });
  const ok = r.ok && r.seen.client === expected;
  const group = underlay ? 'pod → outside, no NAT on the underlay' : 'pod → outside is masqueraded';
  return {
    group,
    check: 'tcp',
    from: label(pod),
    to: `outside ${s.outside.ip}`,
    ok,
    evidence: r.ok ? `outside saw the client as ${r.seen.client}${ok ? ` (${who})` : ` (expected ${expected})`}` : r.error,
  };
}

/** A full-size packet with DF crosses; one byte more must be refused at once, not lost. */
async function pathMtu({ src, dst }: Pair): Promise<CheckResult[]> {
  const link = (await links(netnsPath(src.ns)).catch(() => [])).find((l) => l.name === 'eth0');
  const mtu = src.mtu ?? link?.mtu ?? 1500;
  const group = 'path MTU across nodes';
  const fits = await ping(src.ns, dst.ip, ['-M', 'do', '-s', String(mtu - 28)]);
  const over = await ping(src.ns, dst.ip, ['-M', 'do', '-s', String(mtu - 27)]);
  const refused = !over.ok && /too long|mtu/i.test(over.text);
  return [
    {
      group,
      check: `${mtu} bytes, DF`,
      from: label(src),
      to: label(dst),
      ok: fits.ok,
      evidence: fits.ok ? `crossed without fragmentation (${fits.text})` : fits.text,
    },
    {
      group,
      check: `${mtu + 1} bytes, DF`,
      from: label(src),
      to: label(dst),
      ok: refused,
      evidence: refused ? `refused cleanly: ${over.text}` : over.ok ? 'crossed although it is larger than the MTU' : `lost silently: ${over.text}`,
    },
  ];
}

const network = (cidr: string | undefined) => cidr?.replace(/\.\d+\//, '.0/');

/**
 * Who manages the network: etcd answers and holds every node's lease, and every agent answers on its
 * status socket. Pods keep reaching each other over what the kernel already holds when every agent
 * is dead, so the data-plane checks alone would not show it.
 */
async function controlPlane(s: LabState): Promise<CheckResult[]> {
  const group = 'control plane';
  const out: CheckResult[] = [];
  const flag = s.name === 'weft' ? '' : ` --name ${s.name}`;
  for (const x of [...s.nodes, ...s.pods].filter((x) => x.pending)) {
    const what = 'node' in x ? 'pod' : 'node';
    out.push({
      group,
      check: 'record',
      from: `${what} ${x.name}`,
      to: 'lab state',
      ok: false,
      evidence: `left half made by an interrupted command; remove it with: weft lab ${what} rm ${x.name}${flag}`,
    });
  }
  const nodes = s.nodes.filter((n) => !n.pending);
  if (s.backend === 'macvlan') {
    for (const n of nodes) {
      const ok = await socketAnswers(nodeFiles(s, n).cniSocket);
      out.push({
        group,
        check: 'cni server',
        from: 'verify',
        to: n.name,
        ok,
        evidence: ok ? 'answers on its socket' : `no answer on ${nodeFiles(s, n).cniSocket}: pods cannot be added or removed on ${n.name}`,
      });
    }
    return out;
  }
  let leases: StoredLease[] | undefined;
  try {
    const healthy = await etcdHealthy(s);
    leases = await storedLeases(s);
    out.push({
      group,
      check: 'etcd',
      from: 'verify',
      to: `etcd ${s.etcd.endpoint}`,
      ok: healthy,
      evidence: `${healthy ? 'healthy' : 'answers but reports itself unhealthy'}; holds ${leases.length} subnet lease${leases.length === 1 ? '' : 's'}`,
    });
  } catch (e) {
    out.push({
      group,
      check: 'etcd',
      from: 'verify',
      to: `etcd ${s.etcd.endpoint}`,
      ok: false,
      evidence: `${(e as Error).message}: no node can take, renew or learn a lease`,
    });
  }
  let answering = 0;
  const statuses = await inBatches(nodes, CHECKS_AT_ONCE, (n) =>
    readStatus(nodeFiles(s, n).dir, 3000).catch((e: Error) => ({ status: undefined, note: e.message })),
  );
  for (const [i, n] of nodes.entries()) {
    const { status, note } = statuses[i]!;
    const ok = status !== undefined && note === undefined;
    if (ok) answering++;
    const evidence = ok
      ? `answers: lease ${status.ownLease?.subnet ?? 'none'}, ${status.remoteLeases.length} remote leases, etcd ${status.store.healthy ? 'reachable' : 'UNREACHABLE'} from it`
      : `no answer on its status socket: nothing manages ${n.name}'s routes or renews its lease; bring it back with: weft lab up${flag}`;
    out.push({ group, check: 'agent', from: 'verify', to: `${n.name} ${n.ip}`, ok, evidence });
  }
  if (nodes.length > 0 && answering === 0) {
    out.push({
      group,
      check: 'agents',
      from: 'verify',
      to: 'every node',
      ok: false,
      evidence: 'no agent answers: nothing manages the network (traffic flows only over what the kernel already holds)',
    });
  }
  if (leases) {
    for (const n of nodes) {
      const held = leases.filter((l) => l.publicIP === n.ip);
      const ok = held.length === 1 && network(held[0]!.subnet) === network(n.subnet);
      const evidence =
        held.length === 0
          ? `etcd holds no lease for ${n.ip}`
          : `etcd holds ${held.map((l) => l.subnet).join(', ')} for ${n.ip}${ok ? '' : ` (the lab recorded ${n.subnet ?? 'none'})`}`;
      out.push({ group, check: 'lease', from: 'verify', to: `${n.name} ${network(n.subnet) ?? '?'}`, ok, evidence });
    }
  }
  return out;
}

export async function verify(
  lab: string,
  o: { allPairs?: boolean; progress?: (step: string, ms: number, failed: number) => void } = {},
): Promise<{ state: LabState; results: CheckResult[]; coverage: Coverage }> {
  const all = readState(lab);
  const results: CheckResult[] = [];
  const timed = async (fn: () => Promise<CheckResult[]>): Promise<void> => {
    const started = performance.now();
    const out = await fn();
    results.push(...out);
    const groups = [...new Set(out.map((r) => r.group))];
    if (groups.length) o.progress?.(`${groups.join(', ')}: ${out.length} checks`, performance.now() - started, out.filter((r) => !r.ok).length);
  };
  await timed(() => controlPlane(all));
  // The data plane of what is made: pending entries are reported above.
  const s = { ...all, nodes: all.nodes.filter((n) => !n.pending), pods: all.pods.filter((p) => !p.pending) };
  const pairs = podPairs(s, o.allPairs);
  let othersDone = () => undefined as void;
  const othersEnded = new Promise<void>((r) => (othersDone = r));
  // A small lab's Services are made now, so the agents program them while the checks below run; they
  // probe after them. A large (sampled) lab's come after the pod checks: every agent programming them
  // (an endpoint per pod) takes the cores for seconds, and pod checks meanwhile missed their 2 s (a
  // 20x10 lab: 375 of 580 pairs).
  const early = pairs.coverage.sampled ? undefined : serviceChecks(s, othersEnded, false);
  try {
    await networkModel(s, pairs, timed);
  } finally {
    othersDone();
  }
  await timed(() => early ?? serviceChecks(s, othersEnded, true));
  await timed(() => dnsChecks(s, pairs.coverage.sampled));
  return { state: s, results, coverage: pairs.coverage };
}

/** The pod network checks, after the control plane's. */
async function networkModel(s: LabState, pairs: { same: Pair[]; across: Pair[] }, timed: (fn: () => Promise<CheckResult[]>) => Promise<void>): Promise<void> {
  const probes: CheckResult[] = [];
  const keep = (out: CheckResult[]): CheckResult[] => (probes.push(...out), out);
  await timed(async () => keep(await podToPod(s, 'pod → pod, same node', pairs.same)));
  await timed(async () => keep(await podToPod(s, 'pod → pod, across nodes', pairs.across)));
  const seenAs = new Map<string, Set<string>>();
  for (const r of probes) {
    const m = /saw the client as (\S+)/.exec(r.evidence);
    if (r.ok && m && r.check !== 'icmp') {
      const src = r.from.split(' ')[0]!;
      if (!seenAs.has(src)) seenAs.set(src, new Set());
      seenAs.get(src)!.add(m[1]!);
    }
  }
  const nodePod = [true, false].flatMap((sameNode) =>
    s.nodes.flatMap((node) => {
      const pod = s.pods.find((p) => (p.node === node.name) === sameNode);
      return pod ? [{ node, pod }] : [];
    }),
  );
  await timed(async () => (await inBatches(nodePod, CHECKS_AT_ONCE, ({ node, pod }) => nodeToPod(s, node, pod))).flat());
  await timed(() => Promise.all(s.pods.map((pod) => selfIp(pod, seenAs))));
  const sidecars = s.pods.filter((p) => p.containers.includes('sidecar'));
  await timed(() => inBatches(sidecars, CHECKS_AT_ONCE, (pod) => localhost(s, pod)));
  const firstPods = s.nodes.flatMap((node) => s.pods.find((p) => p.node === node.name) ?? []);
  await timed(() => inBatches(firstPods, CHECKS_AT_ONCE, (pod) => egress(s, pod)));
  const cross = pairs.across[0];
  if (cross) await timed(() => pathMtu(cross));
}

/** The counts verify reports: `retried` of the passed passed only on a second try after a timeout. */
export function tally(results: CheckResult[]): { passed: number; failed: number; skipped: number; retried: number } {
  const failed = results.filter((r) => !r.ok).length;
  const skipped = results.filter((r) => r.skipped).length;
  return { passed: results.length - failed - skipped, failed, skipped, retried: results.filter((r) => r.ok && r.retried).length };
}

export function formatVerify(s: LabState, results: CheckResult[], coverage: Coverage): string {
  const lines = [
    `weft verify: lab ${s.name} (${s.backend}${s.cniMode === 'routed' ? ', routed pods' : ''}, ${s.nodes.length} nodes, ${s.pods.length} pods)`,
    `pod pairs: ${coverage.note}`,
  ];
  let group = '';
  for (const r of results) {
    if (r.group !== group) {
      group = r.group;
      lines.push('', `${group}`);
    }
    lines.push(`  ${r.skipped ? '-' : r.ok ? '✓' : '✗'} ${r.check.padEnd(16)} ${`${r.from} → ${r.to}`.padEnd(48)} ${r.evidence}`);
  }
  const { passed, failed, skipped, retried } = tally(results);
  lines.push(
    '',
    `${passed} passed${retried ? ` (${retried} on a second try after a timeout)` : ''}, ${failed} failed${skipped ? `, ${skipped} not applicable` : ''}`,
  );
  return lines.join('\n');
}
