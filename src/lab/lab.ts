import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../kernel/exec.js';
import { createNetns, deleteNetns, listNetns, netnsPath, netnsPids, signalNetns } from '../kernel/netns.js';
import { addAddr, addBridge, addMacvlan, addRoute, addVeth, setLink } from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { installPlugins } from '../cli/cni.js';
import { LAB_ROOT } from '../util/paths.js';
import { addNetworkList, delNetworkList, loadNetworkList, type NetworkList, type RuntimeOptions } from '../cni/runtime.js';

/**
 * A whole cluster network on one machine, in namespaces named `wl.<lab>.<role>`:
 *
 *   outside (198.18.0.1, 203.0.113.1) ─┐
 *   etcd (198.18.0.2) ─────────────────┼─ underlay: bridge br0 ─ nodeN eth0 198.18.0.(10+N) ─ cni0 ─ pods
 *
 * Every process of the lab (etcd, agents, pod containers) runs inside one of those namespaces and
 * outlives the command that started it; the state file under /run/weft/lab/<lab> records what exists,
 * and `down` removes everything with the lab's prefix whether or not the state file got written.
 */
const WEFT = fileURLToPath(new URL('../../../bin/weft', import.meta.url));
const WORKLOAD = fileURLToPath(new URL('./workload-main.js', import.meta.url));
/** Overlay labs put nodes on a /24; underlay labs widen it so each node's pods get a /24 of it. */
const underlayPrefix = (s: LabState) => (s.backend === 'macvlan' ? 16 : 24);
export const OUTSIDE_IP = '203.0.113.1';
const GATEWAY_IP = '198.18.0.1';
const ETCD_IP = '198.18.0.2';
const POD_NETWORK = '10.244.0.0/16';

export type Backend = 'vxlan' | 'host-gw' | 'udp';
/** How pods reach each other: one of the agent's backends, or macvlan pods on the underlay itself. */
export type LabBackend = Backend | 'macvlan';

export interface NodeState {
  name: string;
  ns: string;
  ip: string;
  subnet?: string;
}

export interface PodState {
  name: string;
  node: string;
  ns: string;
  ip: string;
  mtu?: number;
  containers: string[];
}

export interface LabState {
  name: string;
  backend: LabBackend;
  createdAt: string;
  etcd: { ns: string; ip: string; endpoint: string };
  outside: { ns: string; ip: string; gateway: string };
  underlay: { ns: string };
  nodes: NodeState[];
  pods: PodState[];
}

export class LabError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export const labDir = (lab: string) => join(LAB_ROOT, lab);
// Lab names may hold dashes, so a dot separates: the prefix of lab "a" is never a prefix of lab "a-b".
export const nsName = (lab: string, role: string) => `wl.${lab}.${role}`;
const statePath = (lab: string) => join(labDir(lab), 'state.json');
export const nodeDir = (lab: string, node: string) => join(labDir(lab), 'nodes', node);
export const controlSocket = (lab: string, pod: string, container: string) => join(labDir(lab), 'pods', pod, `${container}.sock`);

export function validateLabName(name: string): void {
  if (!/^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/.test(name)) {
    throw new LabError('bad-name', `lab name "${name}" is invalid: use 1-16 lowercase letters, digits and dashes`);
  }
}

export function readState(lab: string): LabState {
  try {
    return JSON.parse(readFileSync(statePath(lab), 'utf8')) as LabState;
  } catch {
    throw new LabError('no-lab', `no lab named "${lab}" is running; start one with: weft lab up --name ${lab}`);
  }
}

export function writeState(s: LabState): void {
  const file = statePath(s.name);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(s, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

/** Starts `argv` inside namespace `ns`, detached from this command, logging to `log`. */
export function daemon(ns: string, argv: string[], log: string): number {
  const fd = openSync(log, 'a');
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { detached: true, stdio: ['ignore', fd, fd] });
  child.unref();
  return child.pid!;
}

export const execIn = (ns: string, argv: string[], input?: string) => run(['ip', 'netns', 'exec', ns, ...argv], input);

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, hint: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new LabError('timeout', `${what} did not happen within ${timeoutMs / 1000} s; ${hint}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Plugs namespace `ns` into the underlay switch as `eth0` with `ip`. */
function plugIn(plan: Plan, s: LabState, ns: string, port: string, ip: string, defaultVia?: string): void {
  const u = netnsPath(s.underlay.ns);
  const p = netnsPath(ns);
  plan.add(
    addVeth({ ns: u, name: port, peer: { name: 'eth0', netns: p } }),
    setLink({ ns: u, dev: port, master: 'br0', up: true }),
    addAddr({ ns: p, addr: `${ip}/${underlayPrefix(s)}`, dev: 'eth0' }),
    setLink({ ns: p, dev: 'eth0', up: true }),
  );
  if (defaultVia) plan.add(addRoute({ ns: p, dst: 'default', via: defaultVia }));
}

export const nodeIp = (index: number) => `198.18.0.${10 + index}`;

export interface UpOptions {
  name: string;
  nodes: number;
  podsPerNode: number;
  backend: LabBackend;
  progress: (step: string, ms: number) => void;
}

async function step<T>(o: UpOptions, what: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const out = await fn();
  o.progress(what, performance.now() - started);
  return out;
}

export async function up(o: UpOptions): Promise<LabState> {
  validateLabName(o.name);
  if (o.nodes < 1 || o.nodes > 200) throw new LabError('bad-size', '--nodes takes 1 to 200');
  if (o.podsPerNode < 0 || o.podsPerNode > 50) throw new LabError('bad-size', '--pods-per-node takes 0 to 50');
  if (existsSync(statePath(o.name)) || listNetns().some((n) => n.startsWith(nsName(o.name, '')))) {
    throw new LabError('exists', `lab "${o.name}" already exists; remove it with: weft lab down --name ${o.name}, or pick another --name`);
  }
  mkdirSync(labDir(o.name), { recursive: true });
  const s: LabState = {
    name: o.name,
    backend: o.backend,
    createdAt: new Date().toISOString(),
    etcd: { ns: nsName(o.name, 'etcd'), ip: ETCD_IP, endpoint: `http://${ETCD_IP}:2379` },
    outside: { ns: nsName(o.name, 'outside'), ip: OUTSIDE_IP, gateway: GATEWAY_IP },
    underlay: { ns: nsName(o.name, 'underlay') },
    nodes: [],
    pods: [],
  };
  writeState(s);
  try {
    const overlay = o.backend !== 'macvlan';
    await step(o, `underlay switch${overlay ? ', etcd' : ''} and outside-world namespaces`, async () => {
      for (const ns of [s.underlay.ns, s.outside.ns, ...(overlay ? [s.etcd.ns] : [])]) await createNetns(ns);
      const plan = new Plan().add(addBridge({ ns: netnsPath(s.underlay.ns), name: 'br0' }), setLink({ ns: netnsPath(s.underlay.ns), dev: 'br0', up: true }));
      if (overlay) plugIn(plan, s, s.etcd.ns, 'etcd', ETCD_IP, GATEWAY_IP);
      plugIn(plan, s, s.outside.ns, 'outside', GATEWAY_IP);
      plan.add(addAddr({ ns: netnsPath(s.outside.ns), addr: `${OUTSIDE_IP}/24`, dev: 'lo' }));
      await apply(plan);
      daemon(s.outside.ns, [process.execPath, WORKLOAD, '--pod', 'outside', '--node', 'outside', '--container', 'app', '--control', controlSocket(o.name, 'outside', 'app')], join(labDir(o.name), 'outside.log'));
    });
    if (overlay) await step(o, `etcd on ${ETCD_IP}:2379 and the network config (${o.backend})`, async () => {
      const log = join(labDir(o.name), 'etcd.log');
      daemon(s.etcd.ns, ['etcd', '--name', 'lab', '--data-dir', join(labDir(o.name), 'etcd'), '--listen-client-urls', s.etcd.endpoint, '--advertise-client-urls', s.etcd.endpoint, '--listen-peer-urls', `http://${ETCD_IP}:2380`, '--initial-advertise-peer-urls', `http://${ETCD_IP}:2380`, '--initial-cluster', `lab=http://${ETCD_IP}:2380`, '--heartbeat-interval', '50', '--election-timeout', '500'], log);
      await waitFor('etcd start', () => existsSync(log) && /ready to serve client requests/.test(readFileSync(log, 'utf8')), 20_000, `see ${log}`);
      const config = JSON.stringify({ Network: POD_NETWORK, Backend: { Type: o.backend } });
      await execIn(s.etcd.ns, [process.execPath, WEFT, 'network', 'init', '--etcd-endpoints', s.etcd.endpoint, '--config', config]);
    });
    installPlugins(join(labDir(o.name), 'bin'));
    const what = overlay ? 'a weft agent each' : 'a CNI server and a macvlan shim each';
    await step(o, `${o.nodes} nodes with ${what}`, async () => {
      for (let i = 1; i <= o.nodes; i++) await addNode(s, `node${i}`);
    });
    await step(o, `${o.nodes * o.podsPerNode} pods through the CNI plugin`, async () => {
      const jobs = s.nodes.flatMap((n, i) => Array.from({ length: o.podsPerNode }, (_, j) => ({ node: n.name, pod: `pod-${i + 1}${String.fromCharCode(97 + j)}` })));
      await inBatches(jobs, 8, (j) => addPod(s, j.pod, j.node, j.pod.endsWith('a')));
    });
    return s;
  } catch (e) {
    throw e instanceof LabError ? e : new LabError('up-failed', `${(e as Error).message}\nthe lab is half built; remove it with: weft lab down --name ${o.name}`);
  }
}

async function inBatches<T>(items: T[], width: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: Math.min(width, queue.length) }, async () => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) await fn(next);
    }),
  );
}

function subnetOf(envFile: string): string | undefined {
  try {
    return /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(envFile, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** A node namespace on the underlay with its own agent, plus the CNI config a runtime there would use. */
export async function addNode(s: LabState, name: string): Promise<NodeState> {
  if (s.nodes.some((n) => n.name === name)) throw new LabError('exists', `node ${name} already exists in lab ${s.name}`);
  const used = new Set(s.nodes.map((n) => n.ip));
  let index = 1;
  while (used.has(nodeIp(index))) index++;
  const node: NodeState = { name, ns: nsName(s.name, name), ip: nodeIp(index) };
  const dir = nodeDir(s.name, name);
  mkdirSync(dir, { recursive: true });
  await createNetns(node.ns);
  const plan = new Plan();
  plugIn(plan, s, node.ns, name.slice(0, 15), node.ip, GATEWAY_IP);
  await apply(plan);
  if (s.backend === 'macvlan') await underlayNode(s, node, index);
  else await overlayNode(s, node);
  s.nodes.push(node);
  writeState(s);
  return node;
}

/**
 * Underlay mode: the node's pods take 198.18.<index>.2-254 of the underlay /16 as macvlan children of
 * its eth0, and a warm `weft cni serve` stands in for the agent (there is no lease to hold). A macvlan
 * child cannot talk to its parent, so the node gets what deployments add for that: a macvlan shim of
 * its own (weft-shim, 198.18.<index>.1) with a route to its pods through it.
 */
async function underlayNode(s: LabState, node: NodeState, index: number): Promise<void> {
  const dir = nodeDir(s.name, node.name);
  const p = netnsPath(node.ns);
  const pods = `198.18.${index}.0/24`;
  const shim = new Plan().add(
    addMacvlan({ ns: p, name: 'weft-shim', parent: 'eth0' }),
    addAddr({ ns: p, addr: `198.18.${index}.1/32`, dev: 'weft-shim' }),
    setLink({ ns: p, dev: 'weft-shim', up: true }),
    addRoute({ ns: p, dst: pods, dev: 'weft-shim' }),
  );
  await apply(shim);
  const cniSocket = join(dir, 'cni.sock');
  daemon(node.ns, [process.execPath, WEFT, 'cni', 'serve', '--quiet', '--socket', cniSocket], join(dir, 'cni.log'));
  await waitFor(`the CNI server on ${node.name}`, () => existsSync(cniSocket), 20_000, `see ${join(dir, 'cni.log')}`);
  node.subnet = pods;
  const range = { subnet: '198.18.0.0/16', rangeStart: `198.18.${index}.2`, rangeEnd: `198.18.${index}.254`, gateway: GATEWAY_IP };
  const conflist = { cniVersion: '1.1.0', name: 'weft', plugins: [{ type: 'weft', mode: 'macvlan', master: 'eth0', socket: cniSocket, ipam: { type: 'weft-ipam', dataDir: join(dir, 'ipam'), ranges: [[range]], routes: [{ dst: '0.0.0.0/0' }] } }] };
  writeFileSync(join(dir, 'cni.conflist'), `${JSON.stringify(conflist, null, 2)}\n`);
}

async function overlayNode(s: LabState, node: NodeState): Promise<void> {
  const name = node.name;
  const dir = nodeDir(s.name, name);
  const subnetFile = join(dir, 'subnet.env');
  const cniSocket = join(dir, 'cni.sock');
  daemon(node.ns, [process.execPath, WEFT, 'agent', '--node', name, '--iface', 'eth0', '--etcd-endpoints', s.etcd.endpoint, '--subnet-file', subnetFile, '--state-dir', dir, '--cni-socket', cniSocket], join(dir, 'agent.log'));
  await waitFor(`the agent on ${name} writing ${subnetFile}`, () => existsSync(subnetFile) && existsSync(cniSocket), 20_000, `see ${join(dir, 'agent.log')}`);
  node.subnet = subnetOf(subnetFile);
  // As kube-flannel's conflist: a default route through the bridge, and hairpin for services later.
  const conflist = { cniVersion: '1.1.0', name: 'weft', plugins: [{ type: 'weft', subnetFile, dataDir: join(dir, 'ipam'), socket: cniSocket, isDefaultGateway: true, hairpinMode: true }] };
  writeFileSync(join(dir, 'cni.conflist'), `${JSON.stringify(conflist, null, 2)}\n`);
}

/** The runtime's view of a pod on `node`: that node's conflist and cache, its plugins run inside it. */
function runtimeFor(s: LabState, node: NodeState, pod: string): { list: NetworkList; opts: RuntimeOptions } {
  const dir = nodeDir(s.name, node.name);
  return {
    list: loadNetworkList(join(dir, 'cni.conflist')),
    opts: { cniPath: [join(labDir(s.name), 'bin')], cacheDir: join(dir, 'cni-cache'), containerId: pod, netns: netnsPath(nsName(s.name, pod)), ifname: 'eth0', wrap: ['nsenter', `--net=${netnsPath(node.ns)}`] },
  };
}

/** A pod: its namespace, wired by the CNI plugin as a runtime would, and its containers. */
export async function addPod(s: LabState, name: string, node: string, sidecar = false): Promise<PodState> {
  if (!/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/.test(name)) throw new LabError('bad-name', `pod name "${name}" is invalid: use lowercase letters, digits and dashes`);
  if (s.pods.some((p) => p.name === name)) throw new LabError('exists', `pod ${name} already exists in lab ${s.name}`);
  const n = s.nodes.find((x) => x.name === node);
  if (!n) throw new LabError('no-node', `node ${node} is not in lab ${s.name}; its nodes are ${s.nodes.map((x) => x.name).join(', ')}`);
  const ns = nsName(s.name, name);
  await createNetns(ns);
  let result: { ips?: { address: string }[]; interfaces?: { mtu?: number }[] };
  try {
    const { list, opts } = runtimeFor(s, n, name);
    result = (await addNetworkList(list, opts)) as typeof result;
  } catch (e) {
    await deleteNetns(ns);
    throw e;
  }
  const pod: PodState = { name, node, ns, ip: result.ips![0]!.address.split('/')[0]!, containers: sidecar ? ['app', 'sidecar'] : ['app'] };
  const mtu = result.interfaces?.find((i) => i.mtu)?.mtu;
  if (mtu) pod.mtu = mtu;
  mkdirSync(join(labDir(s.name), 'pods', name), { recursive: true });
  for (const c of pod.containers) {
    daemon(ns, [process.execPath, WORKLOAD, '--pod', name, '--node', node, '--container', c, '--control', controlSocket(s.name, name, c)], join(labDir(s.name), 'pods', name, `${c}.log`));
  }
  await waitFor(`pod ${name}'s containers`, () => pod.containers.every((c) => existsSync(controlSocket(s.name, name, c))), 15_000, `see ${join(labDir(s.name), 'pods', name)}`);
  s.pods.push(pod);
  s.pods.sort((a, b) => a.name.localeCompare(b.name));
  writeState(s);
  return pod;
}

/** Stops the pod's containers, DELs it through the CNI plugin and removes its namespace. */
export async function removePod(s: LabState, name: string): Promise<void> {
  const pod = s.pods.find((p) => p.name === name);
  if (!pod) throw new LabError('no-pod', `pod ${name} is not in lab ${s.name}`);
  const { list, opts } = runtimeFor(s, s.nodes.find((x) => x.name === pod.node)!, name);
  await delNetworkList(list, opts);
  await deleteNetns(pod.ns);
  rmSync(join(labDir(s.name), 'pods', name), { recursive: true, force: true });
  s.pods = s.pods.filter((p) => p.name !== name);
  writeState(s);
}

/** Removes a node: its pods, its agent, its lease (so the other nodes drop their routes at once). */
export async function removeNode(s: LabState, name: string): Promise<void> {
  const node = s.nodes.find((n) => n.name === name);
  if (!node) throw new LabError('no-node', `node ${name} is not in lab ${s.name}`);
  for (const p of s.pods.filter((x) => x.node === name)) await removePod(s, p.name);
  const dir = nodeDir(s.name, name);
  await signalNetns(node.ns, 'SIGTERM');
  if (s.backend !== 'macvlan') await releaseLease(s, node);
  await deleteNetns(node.ns);
  rmSync(dir, { recursive: true, force: true });
  s.nodes = s.nodes.filter((n) => n.name !== name);
  writeState(s);
}

/** Once the agent has stopped, `weft agent --cleanup` from inside the node (which alone reaches etcd). */
async function releaseLease(s: LabState, node: NodeState): Promise<void> {
  const dir = nodeDir(s.name, node.name);
  await waitFor(`the agent on ${node.name} stopping`, async () => (await netnsPids(node.ns)).length === 0, 10_000, `see ${join(dir, 'agent.log')}`);
  await execIn(node.ns, [process.execPath, WEFT, 'agent', '--cleanup', '--node', node.name, '--iface', 'eth0', '--etcd-endpoints', s.etcd.endpoint, '--subnet-file', join(dir, 'subnet.env'), '--state-dir', dir]).catch(() => undefined);
}

/** Removes every namespace (and so every process) of the lab, and its state; fine to run twice. */
export async function down(lab: string): Promise<string[]> {
  validateLabName(lab);
  const prefix = nsName(lab, '');
  const gone = listNetns().filter((n) => n.startsWith(prefix));
  for (const ns of gone) await deleteNetns(ns);
  rmSync(labDir(lab), { recursive: true, force: true });
  return gone;
}
