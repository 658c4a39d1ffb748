import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { run } from '../kernel/exec.js';
import type { Manifest } from '../service/manifest.js';
import type { Endpoint, EndpointSliceRecord, PodRecord, Service } from '../service/types.js';
import { LabError, type LabState } from './state.js';

/**
 * The lab's hands on its Service registry. The lab's etcd answers only inside the lab's namespaces,
 * so `weft lab apply/get/delete` and `weft verify` run registry-main in etcd's namespace: one JSON
 * request on its stdin, one JSON reply on its stdout (or a list of requests, served in order, and the
 * list of their replies); `lab up` keeps one open for all its writes (registrySession).
 */
export type RegistryRequest = { op: 'apply'; docs: Manifest[] } | { op: 'delete'; docs: Manifest[] } | { op: 'view' };

export interface Applied {
  kind: string;
  namespace: string;
  name: string;
  action: string;
}

export interface RegistryView {
  services: Service[];
  pods: PodRecord[];
  slices: EndpointSliceRecord[];
  /** Per Service (serviceKey): its endpoints, counting pods only on nodes that hold a lease, as the agents do. */
  endpoints: Record<string, Endpoint[]>;
}

export type RegistryReply =
  | { op: 'apply'; results: Applied[]; services: Service[] }
  | { op: 'delete'; results: (Omit<Applied, 'action'> & { deleted: boolean })[] }
  | ({ op: 'view' } & RegistryView);

/** Namespace and name of a document, whatever its kind. */
export function docId(m: Manifest): { kind: string; namespace: string; name: string } {
  const of = m.kind === 'Service' ? m.service : m.kind === 'EndpointSlice' ? m.slice : m.pod;
  return { kind: m.kind, namespace: of.namespace, name: of.name };
}

/** `80/TCP,8080:30080/TCP` (port, NodePort, protocol), as kubectl shows them. */
export const formatPorts = (svc: Service) => svc.ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`).join(',');

export const formatLabels = (labels: Record<string, string> | undefined) =>
  Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

/** Bundled, as the lab's other processes (build.ts WEFT). */
const REGISTRY_MAIN = fileURLToPath(new URL('../../../build/lab/registry-main.js', import.meta.url));

export function refuseUnderlay(s: LabState): void {
  if (s.backend === 'macvlan') throw new LabError('no-services', `lab ${s.name} runs in underlay mode: it has no etcd and no agents, so no Services`);
}

/** Runs one request against the lab's Service registry (in etcd's namespace: only the lab reaches its etcd). */
export async function registryCall<R extends RegistryRequest>(s: LabState, req: R): Promise<Extract<RegistryReply, { op: R['op'] }>> {
  refuseUnderlay(s);
  try {
    const r = await run(['ip', 'netns', 'exec', s.etcd.ns, process.execPath, REGISTRY_MAIN, s.etcd.endpoint], JSON.stringify(req));
    return JSON.parse(r.stdout) as Extract<RegistryReply, { op: R['op'] }>;
  } catch (e) {
    const why = (e as Error).message.replace(/^.*registry-main\.js \S+: /s, '');
    throw new LabError('registry', why);
  }
}

type Replies<R extends RegistryRequest[]> = { [K in keyof R]: Extract<RegistryReply, { op: R[K]['op'] }> };

/**
 * A registry-main started ahead of its requests, in etcd's namespace: it loads its modules while
 * `lab up` still waits for etcd, then serves every `call` of `lab up` (the pod specs before the pods,
 * the Service echo after them) in that one process: each call's requests one after the other.
 * `close` ends it once what was sent is answered.
 */
export interface RegistrySession {
  call: <R extends RegistryRequest[]>(...reqs: R) => Promise<Replies<R>>;
  close: () => void;
}

export function registrySession(s: LabState): RegistrySession {
  refuseUnderlay(s);
  const child = spawn('ip', ['netns', 'exec', s.etcd.ns, process.execPath, REGISTRY_MAIN, s.etcd.endpoint, '--session'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let ended: string | undefined;
  const waiting: ((line: string | undefined) => void)[] = [];
  const end = (why: string) => {
    ended ??= why;
    for (const w of waiting.splice(0)) w(undefined);
  };
  child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
  child.stdin.on('error', () => undefined);
  child.on('error', (e) => end(`cannot run the registry: ${e.message}`));
  child.on('close', (code, signal) => end(`the registry exited (${code ?? signal})`));
  createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()?.(line));
  return {
    call: async <R extends RegistryRequest[]>(...reqs: R) => {
      const line = await new Promise<string | undefined>((resolve) => {
        if (ended) return resolve(undefined);
        waiting.push(resolve);
        child.stdin.write(`${JSON.stringify(reqs)}\n`);
      });
      if (line === undefined) throw new LabError('registry', stderr.trim() || ended!);
      const r = JSON.parse(line) as Replies<R> | { error: string };
      if ('error' in r) throw new LabError('registry', r.error);
      return r;
    },
    close: () => void child.stdin.end(),
  };
}

/**
 * Follows the lab's registry (and its subnet leases, which decide endpoints): one long-lived
 * registry-main in etcd's namespace prints a view at start and after every change. `onEnd` hears
 * why it stopped (etcd went away, say); `stop` ends it.
 */
export function registryWatch(s: LabState, onView: (v: RegistryView) => void, onEnd: (why: string) => void): { stop: () => void } {
  refuseUnderlay(s);
  const child = spawn('ip', ['netns', 'exec', s.etcd.ns, process.execPath, REGISTRY_MAIN, s.etcd.endpoint, '--watch'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
  createInterface({ input: child.stdout }).on('line', (line) => onView(JSON.parse(line) as RegistryView));
  child.on('close', (code) => onEnd(stderr.trim() || `the registry watcher exited (${code ?? 'signal'})`));
  return { stop: () => void child.stdin.end() };
}
