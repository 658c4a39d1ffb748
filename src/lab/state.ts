import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { flockExclusive, funlock } from '../cni/ipam/flock.js';
import { writeFileAtomic } from '../util/file.js';
import { LAB_ROOT } from '../util/paths.js';
import type { AppPort } from './workload.js';

/**
 * What a lab has, in /run/weft/lab/<lab>/state.json. Every change is a read-modify-write under the
 * lab's lock (`update`), so concurrent `pod add`/`node add` commands never lose each other's entries.
 * An operation records its node or pod as `pending` before it makes anything, and clears the mark
 * when it is done; whatever an interrupted operation left behind is therefore always on record, and
 * `pod rm`, `node rm` and `lab down` find it.
 */
export type Backend = 'vxlan' | 'host-gw' | 'udp';
/** How pods reach each other: one of the agent's backends, or macvlan pods on the underlay itself. */
export type LabBackend = Backend | 'macvlan';
/** How the CNI plugin wires an overlay lab's pods: a veth into cni0 (bridge), or a bridgeless veth with a /32 route (routed). */
export type CniMode = 'bridge' | 'routed';

export interface NodeState {
  name: string;
  ns: string;
  ip: string;
  /** Unique in the lab while the node exists: its IP, its switch port and its underlay pod range derive from it. */
  index: number;
  /** Its veth on the underlay switch. */
  port: string;
  subnet?: string;
  /** Recorded by an add that has not finished (or was killed): `node rm` removes it. */
  pending?: true;
}

export interface PodState {
  name: string;
  node: string;
  ns: string;
  ip: string;
  mtu?: number;
  containers: string[];
  /** Its Kubernetes namespace (CNI_ARGS K8S_POD_NAMESPACE; the pod's name is K8S_POD_NAME); absent: default. */
  namespace?: string;
  /** Ports the app listens on besides 80 (TCP and UDP): the containerPorts of its manifest. */
  ports?: AppPort[];
  pending?: true;
}

/** The lab's Prometheus (monitoring.ts): its namespace and address on the underlay, and the unix socket that reaches it from the root namespace. */
export interface Monitoring {
  ns: string;
  ip: string;
  port: number;
  socket: string;
}

/** One etcd member of the lab: `name` is its etcd --name and the role in its namespace's name. */
export interface EtcdMember {
  name: string;
  ns: string;
  ip: string;
}

/** The lab's etcd members; a lab without `members` has the one at `etcd.ns`. */
export const etcdMembers = (s: LabState): EtcdMember[] => s.etcd.members ?? [{ name: 'etcd', ns: s.etcd.ns, ip: s.etcd.ip }];
export const clientUrl = (m: EtcdMember) => `http://${m.ip}:2379`;
export const etcdEndpoints = (s: LabState): string[] => s.etcd.endpoint.split(',');

/** The Service `lab up` makes over its pods, as its summary shows it. */
export interface DemoService {
  namespace: string;
  name: string;
  clusterIP: string;
  ports: string;
  selector: string;
}

export interface LabState {
  name: string;
  backend: LabBackend;
  createdAt: string;
  /** Set while `lab up` builds the lab; a lab still marked after the command ended was interrupted. */
  building?: true;
  /**
   * `ns`/`ip`: member 1, where the lab's own tools run (its namespace outlives its etcd process).
   * `endpoint`: every member's client URL, comma-separated. `members`: set when there are several.
   */
  etcd: { ns: string; ip: string; endpoint: string; members?: EtcdMember[] };
  outside: { ns: string; ip: string; gateway: string };
  underlay: { ns: string };
  nodes: NodeState[];
  pods: PodState[];
  /** Overlay labs: the CNI plugin's mode for the pods (absent: bridge). Underlay labs are macvlan. */
  cniMode?: CniMode;
  /** Overlay labs only: there is no service proxy without agents. */
  service?: DemoService;
  /** Set by `lab up --monitoring`. */
  monitoring?: Monitoring;
}

export class LabError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** How big a lab may be: what one machine holds, and what `weft lab up` accepts. */
export const LAB_SIZE = { nodes: { min: 1, max: 200 }, podsPerNode: { min: 0, max: 50 }, etcdMembers: { min: 1, max: 5 } };

export const labDir = (lab: string) => join(LAB_ROOT, lab);
// Lab names may hold dashes, so a dot separates: the prefix of lab "a" is never a prefix of lab "a-b".
export const nsName = (lab: string, role: string) => `wl.${lab}.${role}`;
export const statePath = (lab: string) => join(labDir(lab), 'state.json');
export const nodeDir = (lab: string, node: string) => join(labDir(lab), 'nodes', node);
export const podDir = (lab: string, pod: string) => join(labDir(lab), 'pods', pod);
export const controlSocket = (lab: string, pod: string, container: string) => join(podDir(lab, pod), `${container}.sock`);

/** Namespaces of the lab itself; no node or pod may take these names. */
const ROLES = ['underlay', 'etcd', 'etcd2', 'etcd3', 'etcd4', 'etcd5', 'outside', 'monitoring'];

const SHORT_NAME = /^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/;
const POD_NAME = /^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/;

export function validateLabName(name: string): void {
  if (!SHORT_NAME.test(name)) throw new LabError('bad-name', `lab name "${name}" is invalid: use 1-16 lowercase letters, digits and dashes`);
}

export function validateNodeName(name: string): void {
  if (!SHORT_NAME.test(name))
    throw new LabError('bad-name', `node name "${name}" is invalid: use 1-16 lowercase letters, digits and dashes, starting and ending with a letter or digit`);
  if (ROLES.includes(name)) throw new LabError('bad-name', `node name "${name}" is taken by the lab itself (${ROLES.join(', ')}); pick another`);
}

export function validatePodName(name: string): void {
  if (!POD_NAME.test(name))
    throw new LabError('bad-name', `pod name "${name}" is invalid: use 1-22 lowercase letters, digits and dashes, starting and ending with a letter or digit`);
  if (ROLES.includes(name)) throw new LabError('bad-name', `pod name "${name}" is taken by the lab itself (${ROLES.join(', ')}); pick another`);
}

/** Nodes and pods share one namespace per name, and `lab exec` finds either by name. */
export function refuseTaken(s: LabState, name: string): void {
  const node = s.nodes.find((n) => n.name === name);
  const pod = s.pods.find((p) => p.name === name);
  const held = node ?? pod;
  if (!held) return;
  const what = node ? 'node' : 'pod';
  const rm = `weft lab ${what} rm ${name}${s.name === 'weft' ? '' : ` --name ${s.name}`}`;
  if (held.pending) throw new LabError('exists', `${what} ${name} in lab ${s.name} was left half made by an interrupted command; remove it with: ${rm}`);
  throw new LabError('exists', `${what} ${name} already exists in lab ${s.name}; pick another name or remove it with: ${rm}`);
}

export function readState(lab: string): LabState {
  let text: string;
  try {
    text = readFileSync(statePath(lab), 'utf8');
  } catch {
    throw new LabError('no-lab', `no lab named "${lab}" is running; start one with: weft lab up --name ${lab}`);
  }
  try {
    return JSON.parse(text) as LabState;
  } catch {
    throw new LabError(
      'bad-state',
      `the state file of lab "${lab}" (${statePath(lab)}) is unreadable; if no lab up is making it right now, remove the lab with: weft lab down --name ${lab}`,
    );
  }
}

/**
 * Atomic, not durable: a crash of the machine takes the lab's namespaces and processes with it, so
 * the state would be stale either way, and its two fsyncs per change (a pod add makes two changes)
 * held every other step of a `lab up` waiting.
 */
export function writeState(s: LabState): void {
  writeFileAtomic(statePath(s.name), `${JSON.stringify(s, null, 2)}\n`, { durable: false });
}

/** Callers in this process queue here; flock alone would not order two of them on one thread. */
const queues = new Map<string, Promise<void>>();

/** Runs `fn` holding the lab's lock: this process's queue first, then flock on the lab's `lock` file. */
async function withLock<T>(lab: string, fn: () => T | Promise<T>): Promise<T> {
  const before = queues.get(lab) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const tail = before.then(() => mine);
  queues.set(lab, tail);
  await before;
  try {
    let fd: number;
    try {
      fd = openSync(join(labDir(lab), 'lock'), 'a');
    } catch {
      throw new LabError('no-lab', `no lab named "${lab}" is running; start one with: weft lab up --name ${lab}`);
    }
    try {
      await flockExclusive(fd);
      try {
        return await fn();
      } finally {
        funlock(fd);
      }
    } finally {
      closeSync(fd);
    }
  } finally {
    release();
    if (queues.get(lab) === tail) queues.delete(lab);
  }
}

/**
 * Reads the state under the lock, lets `change` modify it, writes it back (atomically), and
 * refreshes `s` (the caller's copy) to what was written. Only quick bookkeeping belongs in `change`:
 * slow work runs outside the lock so that adds still run in parallel.
 */
export async function update<T>(s: LabState, change: (fresh: LabState) => T): Promise<T> {
  return withLock(s.name, () => {
    const fresh = readState(s.name);
    const out = change(fresh);
    writeState(fresh);
    Object.assign(s, fresh);
    return out;
  });
}
