import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../kernel/exec.js';
import { createNetns, deleteNetns, listNetns, netnsPath, netnsPids, signalNetns } from '../kernel/netns.js';
import { apply, Plan } from '../kernel/plan.js';
import { ipBytes } from '../kernel/codec.js';
import { nftSetKeys } from '../kernel/nfnl.js';
import { mapTable, NO_ENDPOINT_SERVICES, PROXY_FAMILY, SERVICE_IPS, serviceTable } from '../proxy/rules.js';
import { installPlugins } from '../cni/install.js';
import type { DNS } from '../cni/spec.js';
import { addNetworkList, delNetworkList, loadNetworkList, type NetworkList, type RuntimeOptions } from '../cni/runtime.js';
import { writeFileAtomic } from '../util/file.js';
import { waitFor } from '../util/wait.js';
import {
  joinUnderlay,
  leaveUnderlay,
  MAX_NODE_INDEX,
  networkConfig,
  newLab,
  nodeConflist,
  nodeFiles,
  nodeIp,
  nodePlan,
  podCniArgs,
  portName,
  runtimeOf,
  presentMembers,
  switchPlan,
  upPods,
} from './build.js';
import { planUp } from './dry-run.js';
import { writeEchoService, writePodSpecs } from './demo.js';
import { dropLeasesOf, putNetworkConfig } from './etcd.js';
import { addMonitoring, writeTargets } from './monitoring.js';
import { registrySession } from './registry.js';
import { interrupted, outsidePod, startContainers, startEtcd, startNodeDaemon, startRuntime, stopContainers } from './procs.js';
import { removeResolvConfs, writeResolvConf } from './resolv.js';
import { revive } from './revive.js';
import {
  etcdMembers,
  LAB_SIZE,
  labDir,
  LabError,
  nodeDir,
  nsName,
  podDir,
  readState,
  refuseTaken,
  statePath,
  update,
  validateLabName,
  validateNodeName,
  validatePodName,
  writeState,
  type CniMode,
  type DemoService,
  type LabBackend,
  type LabState,
  type NodeState,
  type PodState,
} from './state.js';
import type { AppPort } from './workload.js';

/**
 * A whole cluster network on one machine, in namespaces named `wl.<lab>.<role>` (see build.ts for
 * its shape). Every process of the lab (etcd, agents, pod containers) runs inside one of those
 * namespaces and outlives the command that started it. Each operation is all or nothing: it records
 * what it is about to make (state.ts), makes it, and on an error or an interruption removes what it
 * made; a command killed outright leaves its record, which `pod rm`, `node rm` and `lab down` clean.
 */
export { OUTSIDE_IP, nodeIp } from './build.js';
export {
  controlSocket,
  labDir,
  LabError,
  nodeDir,
  nsName,
  readState,
  validateLabName,
  type Backend,
  type LabBackend,
  type LabState,
  type NodeState,
  type PodState,
} from './state.js';

export const execIn = (ns: string, argv: string[], input?: string) => run(['ip', 'netns', 'exec', ns, ...argv], input);

export interface UpOptions {
  name: string;
  nodes: number;
  podsPerNode: number;
  backend: LabBackend;
  progress: (step: string, ms: number) => void;
  /** Aborted on SIGINT/SIGTERM: what this `up` made is removed, then it throws. */
  signal?: AbortSignal;
  /** Change nothing; return the plan of what `up` would make, as text. */
  dryRun?: boolean;
  /** Run Prometheus on the underlay, scraping every agent (monitoring.ts); on a lab that exists, adds it. */
  monitoring?: boolean;
  /** Members of the lab's etcd cluster, each in its own namespace on the underlay; default 1. */
  etcdMembers?: number;
  /** How the CNI plugin wires the pods of an overlay lab: bridge (default, cni0) or routed (bridgeless, /32 routes). */
  cniMode?: CniMode;
}

export interface OpOptions {
  signal?: AbortSignal;
}

async function step<T>(o: UpOptions, what: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const out = await fn();
  // Steps run side by side: once interrupted, none reports itself done.
  interrupted(o.signal);
  o.progress(what, performance.now() - started);
  return out;
}

function validateSize(o: { nodes: number; podsPerNode: number; etcdMembers?: number }): void {
  const { nodes, podsPerNode, etcdMembers } = LAB_SIZE;
  const members = o.etcdMembers ?? 1;
  if (!Number.isInteger(members) || members < etcdMembers.min || members > etcdMembers.max)
    throw new LabError('bad-size', `--etcd-members takes ${etcdMembers.min} to ${etcdMembers.max}`);
  if (!Number.isInteger(o.nodes) || o.nodes < nodes.min || o.nodes > nodes.max) throw new LabError('bad-size', `--nodes takes ${nodes.min} to ${nodes.max}`);
  if (!Number.isInteger(o.podsPerNode) || o.podsPerNode < podsPerNode.min || o.podsPerNode > podsPerNode.max) {
    throw new LabError('bad-size', `--pods-per-node takes ${podsPerNode.min} to ${podsPerNode.max}`);
  }
}

/**
 * Builds a lab; on an existing lab, brings back whatever of it died (revive.ts). A build that fails
 * or is interrupted removes everything it made before it throws.
 */
export function up(o: UpOptions & { dryRun: true }): Promise<string>;
export function up(o: UpOptions): Promise<LabState>;
export async function up(o: UpOptions): Promise<LabState | string> {
  validateLabName(o.name);
  validateSize(o);
  if (o.monitoring && o.backend === 'macvlan')
    throw new LabError('no-agents', 'underlay labs have no agents for Prometheus to scrape; --monitoring needs an overlay lab');
  if ((o.etcdMembers ?? 1) > 1 && o.backend === 'macvlan') throw new LabError('no-etcd', 'underlay labs have no etcd; --etcd-members needs an overlay lab');
  if (o.cniMode !== undefined && o.cniMode !== 'bridge' && o.cniMode !== 'routed')
    throw new LabError('bad-cni-mode', `CNI mode ${JSON.stringify(o.cniMode)} is not one of bridge, routed`);
  if (o.cniMode === 'routed' && o.backend === 'macvlan')
    throw new LabError('bad-cni-mode', 'underlay labs wire macvlan pods; --cni-mode routed needs an overlay lab');
  if (o.dryRun) return planUp(o);
  if (existsSync(statePath(o.name))) {
    const s = readState(o.name);
    if (s.building)
      throw new LabError(
        'half-built',
        `lab "${o.name}" is being built by another lab up, or was left half built by an interrupted one; if none is running, remove it with: weft lab down --name ${o.name}, then run lab up again`,
      );
    await revive(s, o, () => dropPending(s));
    if (o.monitoring && !s.monitoring) await step(o, prometheusStep, () => addMonitoring(s, o.signal));
    return s;
  }
  if (listNetns().some((n) => n.startsWith(nsName(o.name, '')))) {
    throw new LabError(
      'exists',
      `namespaces of a lab "${o.name}" exist without its state file; remove them with: weft lab down --name ${o.name}, or pick another --name`,
    );
  }
  mkdirSync(labDir(o.name), { recursive: true });
  try {
    closeSync(openSync(statePath(o.name), 'wx'));
  } catch {
    throw new LabError('exists', `lab "${o.name}" is being made by another command; wait for it, or pick another --name`);
  }
  const s = newLab(o.name, o.backend, o.etcdMembers, o.cniMode);
  writeState(s);
  try {
    await build(s, o);
    return s;
  } catch (e) {
    await down(o.name);
    const code = e instanceof LabError ? e.code : 'up-failed';
    throw new LabError(code, `lab up failed: ${(e as Error).message}\nremoved everything it had made of lab "${o.name}"`);
  }
}

const prometheusStep = 'Prometheus in its own namespace on the underlay, scraping every agent every 2 s';

/** A promise with its resolve and reject at hand (Promise.withResolvers, from Node 22). */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/**
 * Waits for every one of `work` to end, then throws the first failure (in `work`'s order): a branch
 * that failed never leaves the others still making things while the caller removes the lab.
 */
async function together(work: (Promise<unknown> | undefined)[]): Promise<void> {
  const out = await Promise.allSettled(work.filter((w) => w !== undefined));
  const failed = out.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * What can go at once does: etcd, the outside world's server, the registry process (registrySession:
 * it loads while etcd starts) and every node's namespace, runtime and agent start together. An agent
 * loads its modules (most of its start-up) while etcd starts, then retries until etcd serves and
 * holds the network config (a single member: the etcd client's per-host circuit breaker is off then,
 * store/etcd.ts; a cluster's agents start once every member serves, as that breaker would hold a
 * member that refused them for 5 s). The pods go once their nodes' agents hold their leases and the
 * registry has their specs. Ready once every node's service proxy holds the Service echo.
 */
async function build(s: LabState, o: UpOptions): Promise<void> {
  const overlay = o.backend !== 'macvlan';
  const members = etcdMembers(s);
  await step(o, `underlay switch${overlay ? (members.length > 1 ? `, ${members.length} etcd` : ', etcd') : ''} and outside-world namespaces`, async () => {
    await Promise.all([s.underlay.ns, s.outside.ns, ...(overlay ? members.map((m) => m.ns) : [])].map((ns) => createNetns(ns)));
    await apply(switchPlan(s));
  });
  // Before any node, so that every node joins its targets.
  if (o.monitoring) await step(o, prometheusStep, () => addMonitoring(s, o.signal));
  interrupted(o.signal);
  installPlugins(join(labDir(o.name), 'bin'));
  const registry = overlay ? registrySession(s) : undefined;
  const jobs = upPods(
    Array.from({ length: o.nodes }, (_, i) => `node${i + 1}`),
    o.podsPerNode,
  );
  try {
    const where = members.length > 1 ? `a ${members.length}-member cluster on ${members.map((m) => m.ip).join(', ')}` : `${s.etcd.ip}:2379`;
    const etcd = overlay
      ? step(o, `etcd (${where}) and the network config (${o.backend})`, async () => {
          await startEtcd(s, o.signal);
          await putNetworkConfig(s, networkConfig(s));
        })
      : undefined;
    const what = overlay ? 'a weft agent and a pod runtime each' : 'a CNI server, a macvlan shim and a pod runtime each';
    const names = Array.from({ length: o.nodes }, (_, i) => `node${i + 1}`);
    // Each node's pods go as soon as that node is up, not when the last node is.
    const nodeUp = new Map(names.map((n) => [n, deferred()]));
    for (const d of nodeUp.values()) d.promise.catch(() => undefined);
    const demo = etcd?.then(() => step(o, 'kube-system/kube-dns and the pod specs (app=echo) in the registry', () => writePodSpecs(registry!, jobs)));
    await together([
      etcd,
      step(o, "the outside world's server", () => startContainers(s, outsidePod(s), o.signal)),
      // Started in order, so node<i> still takes index i (addNode takes the lowest free one under the lab's lock, in call order).
      step(o, `${o.nodes} nodes with ${what}`, () =>
        inBatches(names, 4, (name) =>
          addNode(s, name, { signal: o.signal, ...(etcd && { store: etcd, afterStore: members.length > 1 }) }).then(
            () => nodeUp.get(name)!.resolve(),
            (e: unknown) => {
              nodeUp.get(name)!.reject(e);
              throw e;
            },
          ),
        ).finally(() => {
          // Nodes a failure kept from starting never come.
          for (const d of nodeUp.values()) d.reject(new LabError('interrupted', 'its node was not made'));
        }),
      ),
      demo,
      // Timed from the first node up.
      Promise.race([...nodeUp.values()].map((d) => d.promise)).then(() =>
        step(o, `${o.nodes * o.podsPerNode} pods through the CNI plugin`, () =>
          inBatches(jobs, 8, async (j) => {
            await Promise.all([nodeUp.get(j.node)!.promise, demo]);
            return addPod(s, j.pod, j.node, { sidecar: j.sidecar, signal: o.signal });
          }),
        ),
      ),
    ]);
    if (registry) {
      const service = await step(o, 'the Service echo over the pods in the registry', async () => {
        const svc = await writeEchoService(registry);
        await update(s, (f) => void (f.service = svc));
        return svc;
      });
      await step(o, "the Service echo in every node's service proxy", () => inEveryProxy(s, service, o.signal));
    }
  } finally {
    registry?.close();
  }
  await update(s, (f) => delete f.building);
}

/**
 * Waits until every node's nftables hold `svc`'s ClusterIP in the service proxy's maps: the agents
 * program a Service in one transaction, so the element means all of it is there. Until then a lab
 * is not ready: at 100 x 10 the echo Service is 4,000 nftables objects per node and took every agent
 * 25 s. Read from each node's kernel over nfnetlink, so waiting costs the agents nothing.
 */
async function inEveryProxy(s: LabState, svc: DemoService, signal?: AbortSignal): Promise<void> {
  const ip = ipBytes(svc.clusterIP).bytes;
  const shard = serviceTable(svc.namespace, svc.name);
  // With endpoints in its shard's service-ips; without (a lab of no pods) in the front table's no-endpoint-services.
  const holds = async (node: NodeState) => {
    for (const map of [SERVICE_IPS, NO_ENDPOINT_SERVICES] as const) {
      const keys = await nftSetKeys(netnsPath(node.ns), PROXY_FAMILY, mapTable(map, shard), map).catch(() => []);
      if (keys.some((k) => k.subarray(0, 4).equals(ip))) return true;
    }
    return false;
  };
  // A read is a fraction of a millisecond: often in a small lab, about 400 reads a second in all in a big one.
  const intervalMs = Math.max(25, s.nodes.length * 2.5);
  await together(
    s.nodes.map((node) =>
      waitFor(async () => (signal?.aborted ? 'aborted' : (await holds(node)) && 'ok'), {
        timeoutMs: PROXY_READY_MS,
        intervalMs,
        what: `the service proxy on ${node.name} to program the Service ${svc.namespace}/${svc.name} (its agent's log: ${nodeFiles(s, node).log})`,
      }),
    ),
  );
  interrupted(signal);
}

const PROXY_READY_MS = 120_000;

/**
 * The kernel keeps one ARP table for every namespace of the machine, capped at
 * net.ipv4.neigh.default.gc_thresh3 (1024 by default, settable only from the root namespace); past
 * it, new neighbours fail ("neighbor table overflow": pods see EHOSTUNREACH and ENOBUFS, verify fails
 * at random). Permanent entries do not count (kernel ≥ 4.19). An overlay lab makes none that count:
 * its underlay is static (build.ts joinUnderlay) and its pods and nodes know each other's MACs (the
 * CNI's staticNeighbours), so pods never ARP. An underlay (macvlan) lab's pods sit on the switch and
 * ARP for each other: about 2(N+P) per node. Returns what to tell the user when it will not fit.
 */
export function neighbourRoom(nodes: number, podsPerNode: number, underlay = false): string | undefined {
  if (!underlay) return undefined;
  let cap: number;
  try {
    cap = Number(readFileSync('/proc/sys/net/ipv4/neigh/default/gc_thresh3', 'utf8'));
  } catch {
    return undefined;
  }
  const need = nodes * 2 * (nodes + podsPerNode);
  if (need <= cap) return undefined;
  return `warning: this lab needs about ${need} ARP entries, and the kernel holds ${cap} for all namespaces together (net.ipv4.neigh.default.gc_thresh3); past it pods lose traffic and verify fails. Raise it on the host first: sysctl -w net.ipv4.neigh.default.gc_thresh3=${2 ** Math.ceil(Math.log2(need * 2))} (and gc_thresh2 to about half that)`;
}

/**
 * Runs `fn` over `items`, `width` at a time, and gives its results in the order of `items`; after a
 * failure it starts no more and waits for those running.
 */
export async function inBatches<T, R>(items: T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  let failure: { error: unknown } | undefined;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length && !failure) {
        const i = next++;
        await fn(items[i]!).then(
          (r) => (results[i] = r),
          (error: unknown) => (failure ??= { error }),
        );
      }
    }),
  );
  if (failure) throw failure.error;
  return results;
}

/** Removes the nodes and pods that interrupted commands left pending; returns their names. */
async function dropPending(s: LabState): Promise<string[]> {
  const pods = s.pods.filter((p) => p.pending).map((p) => p.name);
  const nodes = s.nodes.filter((n) => n.pending).map((n) => n.name);
  for (const p of pods) await removePod(s, p);
  for (const n of nodes) await removeNode(s, n);
  return [...pods, ...nodes];
}

/**
 * Runs `work` for something already recorded as pending. On a failure `undo` removes what it made and
 * `forget` drops the record; if `undo` fails too, the record stays so that `rmHint` finds it.
 */
async function allOrNothing<T>(what: string, work: () => Promise<T>, undo: () => Promise<void>, forget: () => Promise<void>, rmHint: string): Promise<T> {
  try {
    return await work();
  } catch (e) {
    try {
      await undo();
    } catch (u) {
      throw new LabError(
        'rollback-failed',
        `${(e as Error).message}\nremoving the half-made ${what} failed too: ${(u as Error).message}\nit stays on record; remove it with: ${rmHint}`,
      );
    }
    await forget();
    throw e;
  }
}

const flag = (s: LabState) => (s.name === 'weft' ? '' : ` --name ${s.name}`);

/**
 * A node namespace on the underlay with its own agent, plus the CNI config a runtime there would use.
 * `store`: etcd starting (`lab up` starts nodes meanwhile); its failure ends the wait for the agent.
 * `afterStore`: the agent starts only once it has (see build).
 */
export async function addNode(s: LabState, name: string, o: OpOptions & { store?: Promise<unknown>; afterStore?: boolean } = {}): Promise<NodeState> {
  validateNodeName(name);
  const node = await update(s, (f) => {
    refuseTaken(f, name);
    const used = new Set(f.nodes.map((n) => n.index));
    let index = 1;
    while (used.has(index)) index++;
    if (index > MAX_NODE_INDEX) throw new LabError('full', `lab ${f.name} has ${f.nodes.length} nodes, the most it takes`);
    const n: NodeState = { name, ns: nsName(f.name, name), ip: nodeIp(index), index, port: portName(index), pending: true };
    f.nodes.push(n);
    return n;
  });
  return allOrNothing(
    `node ${name}`,
    async () => {
      interrupted(o.signal);
      mkdirSync(nodeDir(s.name, name), { recursive: true });
      await createNetns(node.ns);
      await apply(nodePlan(s, node));
      await apply(joinUnderlay(new Plan(), presentMembers(s), [{ ns: node.ns, ip: node.ip }]));
      interrupted(o.signal);
      // An agent waiting for a store that failed to start stops waiting at once.
      const storeFailed = new AbortController();
      o.store?.catch((e: unknown) => storeFailed.abort(e));
      const signal = o.signal ? AbortSignal.any([o.signal, storeFailed.signal]) : storeFailed.signal;
      const [subnet] = await Promise.all([
        (async () => {
          if (o.afterStore) await o.store;
          return startNodeDaemon(s, node, signal);
        })(),
        startRuntime(s, name, o.signal),
      ]);
      writeFileAtomic(nodeFiles(s, node).conflist, `${JSON.stringify(nodeConflist(s, node), null, 2)}\n`, { durable: false });
      interrupted(o.signal);
      return update(s, (f) => {
        const n = f.nodes.find((x) => x.name === name)!;
        if (subnet) n.subnet = subnet;
        delete n.pending;
        writeTargets(f);
        return n;
      });
    },
    () => teardownNode(s, node),
    () => update(s, (f) => void (f.nodes = f.nodes.filter((x) => x.name !== name))),
    `weft lab node rm ${name}${flag(s)}`,
  );
}

/**
 * Stops the node's agent and runtime, drops its lease (whether or not the agent got to write its subnet
 * file), and removes its namespaces and files. Fine to run on a node that was only half made.
 */
async function teardownNode(s: LabState, node: NodeState): Promise<void> {
  await deleteNetns(runtimeOf(s, node.name).ns);
  // Every ns in `presentMembers` was there a moment ago; one removed since is tolerated as missing.
  await apply(leaveUnderlay(new Plan(), presentMembers(s), { ns: node.ns, ip: node.ip }));
  if (existsSync(netnsPath(node.ns))) {
    await signalNetns(node.ns, 'SIGTERM');
    await waitFor(async () => (await netnsPids(node.ns)).length === 0, { timeoutMs: 10_000, what: `the processes of ${node.name} to stop` }).catch(
      () => undefined,
    );
    await deleteNetns(node.ns);
  }
  if (s.backend !== 'macvlan') {
    await dropLeasesOf(s, node.ip).catch((e: Error) => {
      throw new LabError('etcd', `${node.name}'s lease could not be dropped: ${e.message}; bring etcd back with: weft lab up${flag(s)}, then run this again`);
    });
  }
  rmSync(nodeDir(s.name, node.name), { recursive: true, force: true });
}

/** The runtime's view of a pod on `node`: that node's conflist and cache, its plugins run inside it. */
function runtimeFor(s: LabState, node: NodeState, pod: { name: string; namespace?: string }): { list: NetworkList; opts: RuntimeOptions } {
  const dir = nodeDir(s.name, node.name);
  return {
    list: loadNetworkList(join(dir, 'cni.conflist')),
    opts: {
      cniPath: [join(labDir(s.name), 'bin')],
      cacheDir: join(dir, 'cni-cache'),
      containerId: pod.name,
      netns: netnsPath(nsName(s.name, pod.name)),
      ifname: 'eth0',
      args: podCniArgs(pod),
      wrap: ['nsenter', `--net=${netnsPath(node.ns)}`],
    },
  };
}

export interface PodOptions extends OpOptions {
  sidecar?: boolean;
  /** Its Kubernetes namespace; default `default`. */
  namespace?: string;
  /** Ports its app listens on besides 80. */
  ports?: AppPort[];
}

/** A pod: its namespace, wired by the CNI plugin as a runtime would, and its containers. */
export async function addPod(s: LabState, name: string, node: string, o: PodOptions = {}): Promise<PodState> {
  validatePodName(name);
  const pod = await update(s, (f) => {
    refuseTaken(f, name);
    const n = f.nodes.find((x) => x.name === node);
    if (!n) throw new LabError('no-node', `node ${node} is not in lab ${f.name}; its nodes are ${f.nodes.map((x) => x.name).join(', ') || 'none'}`);
    if (n.pending)
      throw new LabError('no-node', `node ${node} was not made completely (an interrupted node add); remove it with: weft lab node rm ${node}${flag(f)}`);
    const p: PodState = {
      name,
      node,
      ns: nsName(f.name, name),
      ip: '',
      containers: o.sidecar ? ['app', 'sidecar'] : ['app'],
      ...(o.namespace && o.namespace !== 'default' ? { namespace: o.namespace } : {}),
      ...(o.ports?.length ? { ports: o.ports } : {}),
      pending: true,
    };
    f.pods.push(p);
    return p;
  });
  return allOrNothing(
    `pod ${name}`,
    async () => {
      interrupted(o.signal);
      await createNetns(pod.ns);
      const { list, opts } = runtimeFor(
        s,
        s.nodes.find((x) => x.name === node)!,
        pod,
      );
      const result = (await addNetworkList(list, opts)) as { ips?: { address: string }[]; interfaces?: { mtu?: number }[]; dns?: DNS };
      interrupted(o.signal);
      writeResolvConf(pod.ns, result.dns);
      const ip = result.ips![0]!.address.split('/')[0]!;
      const mtu = result.interfaces?.find((i) => i.mtu)?.mtu;
      await startContainers(s, pod, o.signal);
      return update(s, (f) => {
        const p = f.pods.find((x) => x.name === name)!;
        p.ip = ip;
        if (mtu) p.mtu = mtu;
        delete p.pending;
        f.pods.sort((a, b) => a.name.localeCompare(b.name));
        return p;
      });
    },
    () => teardownPod(s, pod),
    () => update(s, (f) => void (f.pods = f.pods.filter((x) => x.name !== name))),
    `weft lab pod rm ${name}${flag(s)}`,
  );
}

/** Its containers' sockets closed, CNI DEL (releases the IP, removes the veth), then the namespace, then its files. */
async function teardownPod(s: LabState, pod: PodState): Promise<void> {
  await stopContainers(s, pod);
  const node = readState(s.name).nodes.find((n) => n.name === pod.node);
  if (node && existsSync(netnsPath(node.ns)) && existsSync(nodeFiles(s, node).conflist)) {
    const { list, opts } = runtimeFor(s, node, pod);
    await delNetworkList(list, opts);
  }
  await deleteNetns(pod.ns);
  removeResolvConfs(pod.ns, true);
  rmSync(podDir(s.name, pod.name), { recursive: true, force: true });
}

/** Stops the pod's containers, DELs it through the CNI plugin and removes its namespace; pending pods too. */
export async function removePod(s: LabState, name: string): Promise<void> {
  const pod = readState(s.name).pods.find((p) => p.name === name);
  if (!pod) throw new LabError('no-pod', `pod ${name} is not in lab ${s.name}`);
  await teardownPod(s, pod);
  await update(s, (f) => void (f.pods = f.pods.filter((p) => p.name !== name)));
}

/** Removes a node: its pods, its agent, its lease (so the other nodes drop their routes at once). */
export async function removeNode(s: LabState, name: string): Promise<void> {
  const fresh = readState(s.name);
  const node = fresh.nodes.find((n) => n.name === name);
  if (!node) throw new LabError('no-node', `node ${name} is not in lab ${s.name}`);
  for (const p of fresh.pods.filter((x) => x.node === name)) await removePod(s, p.name);
  await teardownNode(s, node);
  await update(s, (f) => {
    f.nodes = f.nodes.filter((n) => n.name !== name);
    writeTargets(f);
  });
}

/** Removes every namespace (and so every process) of the lab, and its state; fine to run twice. */
export async function down(lab: string): Promise<string[]> {
  validateLabName(lab);
  const prefix = nsName(lab, '');
  const gone = listNetns().filter((n) => n.startsWith(prefix));
  for (const ns of gone) await deleteNetns(ns);
  removeResolvConfs(prefix);
  rmSync(labDir(lab), { recursive: true, force: true });
  return gone;
}
