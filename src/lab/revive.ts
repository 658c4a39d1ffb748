import { existsSync } from 'node:fs';
import { netnsPath, netnsPids, signalNetns } from '../kernel/netns.js';
import { waitFor } from '../util/wait.js';
import { reviveMonitoring } from './monitoring.js';
import { nodeDaemonAnswers, outsidePod, socketAnswers, startContainers, startEtcd, startNodeDaemon } from './procs.js';
import { controlSocket, etcdMembers, LabError, update, type LabState, type NodeState } from './state.js';

/**
 * `lab up` on a lab that exists: whatever of it died (etcd, agents, pod containers, Prometheus) starts again from
 * the saved state. etcd keeps its data dir, so each agent finds its own lease and keeps its subnet;
 * the kernel side (namespaces, links, routes) never went away. Namespaces that are gone (the machine
 * restarted) cannot be brought back this way.
 */
export async function revive(
  s: LabState,
  o: { progress: (step: string, ms: number) => void; signal?: AbortSignal },
  dropPending: () => Promise<string[]>,
): Promise<LabState> {
  const started = performance.now();
  const lost = [
    s.underlay.ns,
    s.outside.ns,
    ...(s.backend === 'macvlan' ? [] : etcdMembers(s).map((m) => m.ns)),
    ...[...s.nodes, ...s.pods].filter((x) => !x.pending).map((x) => x.ns),
  ].filter((ns) => !existsSync(netnsPath(ns)));
  if (lost.length) {
    throw new LabError(
      'lost',
      `lab "${s.name}" cannot be revived: its namespaces ${lost.join(', ')} are gone (did the machine restart?); remove it with: weft lab down --name ${s.name}, then run lab up again`,
    );
  }
  const done: string[] = [];
  if (s.backend !== 'macvlan') {
    const members = etcdMembers(s);
    const dead = (await Promise.all(members.map(async (m) => ((await netnsPids(m.ns)).length === 0 ? m : undefined)))).filter((m) => m !== undefined);
    if (dead.length) {
      await startEtcd(s, o.signal, dead);
      done.push(members.length === 1 ? 'restarted etcd with its data' : `restarted etcd members ${dead.map((m) => m.name).join(', ')} with their data`);
    }
  }
  // With etcd back, so that a half-made node's lease can go too.
  const dropped = await dropPending();
  if (dropped.length) done.push(`removed what interrupted commands left half made (${dropped.join(', ')})`);
  if (!(await socketAnswers(controlSocket(s.name, 'outside', 'app')))) {
    await startContainers(s, outsidePod(s), o.signal);
    done.push("restarted the outside world's server");
  }
  const what = s.backend === 'macvlan' ? 'CNI servers' : 'agents';
  const nodes = (await Promise.all(s.nodes.map(async (n) => ((await nodeDaemonAnswers(s, n)) ? undefined : n)))).filter((n): n is NodeState => n !== undefined);
  const moved: string[] = [];
  await Promise.all(
    nodes.map(async (node) => {
      // Whatever still runs there without answering (a hung agent) goes first.
      await signalNetns(node.ns, 'SIGKILL');
      await waitFor(async () => (await netnsPids(node.ns)).length === 0, { timeoutMs: 10_000, what: `the old processes of ${node.name} to go` });
      const subnet = await startNodeDaemon(s, node, o.signal);
      if (subnet && subnet !== node.subnet) {
        moved.push(`${node.name} ${node.subnet ?? '?'} → ${subnet}`);
        await update(s, (f) => void (f.nodes.find((n) => n.name === node.name)!.subnet = subnet));
      }
    }),
  );
  if (nodes.length)
    done.push(`restarted the ${what} on ${nodes.map((n) => n.name).join(', ')} (${moved.length ? `subnets changed: ${moved.join(', ')}` : 'same subnets'})`);
  let containers = 0;
  await Promise.all(
    s.pods.map(async (pod) => {
      const dead = [];
      for (const c of pod.containers) if (!(await socketAnswers(controlSocket(s.name, pod.name, c)))) dead.push(c);
      if (!dead.length) return;
      containers += dead.length;
      await startContainers(s, { ...pod, containers: dead }, o.signal);
    }),
  );
  if (containers) done.push(`restarted ${containers} pod container${containers === 1 ? '' : 's'}`);
  if (await reviveMonitoring(s, o.signal)) done.push('restarted Prometheus');
  o.progress(
    done.length ? `lab "${s.name}" existed: ${done.join('; ')}` : `lab "${s.name}" exists and every process of it answers; nothing to restart`,
    performance.now() - started,
  );
  return s;
}
