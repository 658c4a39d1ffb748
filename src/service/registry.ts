import { randomUUID } from 'node:crypto';
import type { Store, WriteOp } from '../store/store.js';
import {
  ClusterIpPicker,
  clusterIpKey,
  DEFAULT_SERVICE_CIDR,
  NODE_PORT_RANGE,
  nodePortKey,
  NodePortPicker,
  release,
  reserve,
  ServiceCidr,
  type Reservation,
} from './alloc.js';
import { createEach, mapLimit, readEach, writeAll } from './batch.js';
import { ManifestError, type DocSource, type Manifest, type ManifestIssue } from './manifest.js';
import { serviceKey, type EndpointSliceRecord, type PodRecord, type Service } from './types.js';
import type { PodSpecInput, ServiceInput } from './validate.js';

/** Weft's own etcd prefix; flannel's `/coreos.com/network` is never written. */
export const DEFAULT_REGISTRY_PREFIX = '/weft';
export const SERVICES_PREFIX = 'services/';
export const PODS_PREFIX = 'pods/';
export const SLICES_PREFIX = 'endpointslices/';

export const serviceStoreKey = (ns: string, name: string) => `${SERVICES_PREFIX}${ns}/${name}`;
export const podStoreKey = (ns: string, name: string) => `${PODS_PREFIX}${ns}/${name}`;
export const sliceStoreKey = (ns: string, name: string) => `${SLICES_PREFIX}${ns}/${name}`;

export type ApplyAction = 'created' | 'configured' | 'unchanged';

export interface ApplyResult {
  kind: Manifest['kind'];
  namespace: string;
  name: string;
  action: ApplyAction;
  /** For Services: the stored form (allocated ClusterIP and NodePorts included). */
  service?: Service;
}

export interface RegistrySnapshot {
  revision: number;
  services: Map<string, Service>;
  pods: Map<string, PodRecord>;
  slices: Map<string, EndpointSliceRecord>;
}

export class RegistryError extends Error {
  override name = 'RegistryError';
  constructor(
    readonly code: 'not-found',
    message: string,
  ) {
    super(message);
  }
}

export interface RegistryOptions {
  /** Where ClusterIPs come from; default 10.96.0.0/12. */
  serviceCidr?: string;
}

/** A stored value back into its record; undefined for a value that is not JSON of an object. */
export function decodeRecord<T>(value: string): T | undefined {
  try {
    const v: unknown = JSON.parse(value);
    return typeof v === 'object' && v !== null ? (v as T) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Services, pods and EndpointSlices in the store (keys `services/<ns>/<name>`, `pods/<ns>/<name>`,
 * `endpointslices/<ns>/<name>`, plus the allocation keys of alloc.ts), written as the API server
 * would: validated as a whole batch first, ClusterIPs and NodePorts allocated, nothing written when
 * any document is invalid.
 */
export class Registry {
  readonly cidr: ServiceCidr;

  constructor(
    readonly store: Store,
    options: RegistryOptions = {},
  ) {
    this.cidr = new ServiceCidr(options.serviceCidr ?? DEFAULT_SERVICE_CIDR);
  }

  /**
   * Creates or updates every document. All are checked first (against each other and what is
   * stored: a ClusterIP or NodePort outside its range or taken, an immutable field changed); then
   * ClusterIPs and NodePorts are reserved, and a reservation that loses a race undoes the others;
   * only then are the objects written. Throws a ManifestError naming each problem.
   */
  async applyManifests(docs: Manifest[]): Promise<ApplyResult[]> {
    const issues: ManifestIssue[] = [];
    const seen = new Map<string, DocSource | undefined>();
    for (const d of docs) {
      const id = `${d.kind} ${keyOf(d)}`;
      if (seen.has(id)) issues.push(issue(d, '', `${id} appears twice in this apply (also document ${seen.get(id)?.index ?? '?'}); keep one`));
      else seen.set(id, d.doc);
    }
    const services = docs.filter((d): d is Manifest & { kind: 'Service' } => d.kind === 'Service');
    const existing = await readEach(
      this.store,
      services.map((d) => serviceStoreKey(d.service.namespace, d.service.name)),
    );
    const plans = services.map((d, i) => this.plan(d, existing[i] === undefined ? undefined : decodeRecord<Service>(existing[i]), issues));
    checkBatchClashes(plans, issues);
    if (issues.length > 0) throw new ManifestError(issues);

    const reserved: { key: string; owner: string }[] = [];
    try {
      await this.reserveAll(plans, reserved, issues);
    } catch (err) {
      await this.undo(reserved);
      throw err;
    }
    if (issues.length > 0) {
      await this.undo(reserved);
      throw new ManifestError(issues);
    }

    const results = new Map<Manifest, ApplyResult>();
    const writes: WriteOp[] = [];
    for (const p of plans) {
      const { result, value } = serviceRecord(p);
      results.set(p.doc, result);
      if (result.action !== 'unchanged') writes.push({ type: 'put', key: serviceStoreKey(result.namespace, result.name), value });
    }
    const slices = docs.filter((d): d is Manifest & { kind: 'EndpointSlice' } => d.kind === 'EndpointSlice');
    const oldSlices = await readEach(
      this.store,
      slices.map((d) => sliceStoreKey(d.slice.namespace, d.slice.name)),
    );
    for (const [i, d] of slices.entries()) {
      const value = JSON.stringify(d.slice);
      const action = oldSlices[i] === value ? 'unchanged' : oldSlices[i] === undefined ? 'created' : 'configured';
      results.set(d, { kind: d.kind, namespace: d.slice.namespace, name: d.slice.name, action });
      if (action !== 'unchanged') writes.push({ type: 'put', key: sliceStoreKey(d.slice.namespace, d.slice.name), value });
    }
    await writeAll(this.store, writes);
    await mapLimit(
      docs.filter((d): d is Manifest & { kind: 'Pod' } => d.kind === 'Pod'),
      async (d) => results.set(d, { kind: d.kind, namespace: d.pod.namespace, name: d.pod.name, action: await this.putPodSpec(d.pod) }),
    );
    await mapLimit(
      plans.flatMap((p) => p.free.map((key) => ({ key, owner: p.owner }))),
      ({ key, owner }) => release(this.store, key, owner),
    );
    return docs.map((d) => results.get(d)!);
  }

  async getService(ns: string, name: string): Promise<Service | undefined> {
    const kv = await this.store.get(serviceStoreKey(ns, name));
    return kv && decodeRecord<Service>(kv.value);
  }

  async listServices(ns?: string): Promise<Service[]> {
    return this.listOf<Service>(ns === undefined ? SERVICES_PREFIX : `${SERVICES_PREFIX}${ns}/`);
  }

  /** Deletes the Service and frees its ClusterIP and NodePorts; false when there was none. */
  async deleteService(ns: string, name: string): Promise<boolean> {
    const key = serviceStoreKey(ns, name);
    for (;;) {
      const kv = await this.store.get(key);
      if (!kv) return false;
      if (!(await this.store.deleteIfValue(key, kv.value))) continue;
      const svc = decodeRecord<Service>(kv.value);
      if (svc) await Promise.all(allocationKeys(svc).map((k) => release(this.store, k, serviceKey(svc))));
      return true;
    }
  }

  async getSlice(ns: string, name: string): Promise<EndpointSliceRecord | undefined> {
    const kv = await this.store.get(sliceStoreKey(ns, name));
    return kv && decodeRecord<EndpointSliceRecord>(kv.value);
  }

  async listSlices(ns?: string): Promise<EndpointSliceRecord[]> {
    return this.listOf<EndpointSliceRecord>(ns === undefined ? SLICES_PREFIX : `${SLICES_PREFIX}${ns}/`);
  }

  async putSlice(slice: EndpointSliceRecord): Promise<ApplyAction> {
    const key = sliceStoreKey(slice.namespace, slice.name);
    const value = JSON.stringify(slice);
    const before = await this.store.get(key);
    if (before?.value === value) return 'unchanged';
    await this.store.put(key, value);
    return before ? 'configured' : 'created';
  }

  deleteSlice(ns: string, name: string): Promise<boolean> {
    return this.store.delete(sliceStoreKey(ns, name));
  }

  async getPod(ns: string, name: string): Promise<PodRecord | undefined> {
    const kv = await this.store.get(podStoreKey(ns, name));
    return kv && decodeRecord<PodRecord>(kv.value);
  }

  async listPods(ns?: string): Promise<PodRecord[]> {
    return this.listOf<PodRecord>(ns === undefined ? PODS_PREFIX : `${PODS_PREFIX}${ns}/`);
  }

  /** Creates the pod or updates its spec part (labels, ports, node, hostname); its status (IP, readiness) stays. */
  async putPodSpec(spec: PodSpecInput): Promise<ApplyAction> {
    let existed = false;
    const { changed } = await this.updatePod(spec.namespace, spec.name, (cur) => {
      existed = cur !== undefined;
      const next: PodRecord = { ...(cur ?? newPod(spec.namespace, spec.name)), labels: { ...spec.labels }, ports: spec.ports.map((p) => ({ ...p })) };
      setOptional(next, 'node', spec.node ?? cur?.node);
      setOptional(next, 'hostname', spec.hostname);
      return next;
    });
    return !changed ? 'unchanged' : existed ? 'configured' : 'created';
  }

  /** CNI ADD: the pod (created with no labels if unknown) now has this IP and container on this node, and is not terminating. */
  async registerPod(p: { namespace: string; name: string; ip: string; containerID: string; node: string }): Promise<PodRecord> {
    const { pod } = await this.updatePod(p.namespace, p.name, (cur) => ({
      ...(cur ?? newPod(p.namespace, p.name)),
      ip: p.ip,
      containerID: p.containerID,
      node: p.node,
      terminating: false,
    }));
    return pod!;
  }

  /** CNI DEL: removes the pod if it is still the container that was deleted (a newer ADD's record stays). */
  async unregisterPod(p: { namespace: string; name: string; containerID: string }): Promise<boolean> {
    const key = podStoreKey(p.namespace, p.name);
    for (;;) {
      const kv = await this.store.get(key);
      if (!kv || decodeRecord<PodRecord>(kv.value)?.containerID !== p.containerID) return false;
      if (await this.store.deleteIfValue(key, kv.value)) return true;
    }
  }

  /** Sets (`k: 'v'`) and removes (`k: null`) labels, as `kubectl label` does. */
  async labelPod(ns: string, name: string, changes: Record<string, string | null>): Promise<PodRecord> {
    return this.changePod(ns, name, (cur) => {
      const labels = { ...cur.labels };
      for (const [k, v] of Object.entries(changes)) {
        if (v === null) delete labels[k];
        else labels[k] = v;
      }
      return { ...cur, labels };
    });
  }

  setPodReady(ns: string, name: string, ready: boolean): Promise<PodRecord> {
    return this.changePod(ns, name, (cur) => ({ ...cur, ready }));
  }

  setPodTerminating(ns: string, name: string, terminating: boolean): Promise<PodRecord> {
    return this.changePod(ns, name, (cur) => ({ ...cur, terminating }));
  }

  deletePod(ns: string, name: string): Promise<boolean> {
    return this.store.delete(podStoreKey(ns, name));
  }

  /** Everything under the registry, read at one revision. */
  async snapshot(): Promise<RegistrySnapshot> {
    const listing = await this.store.list('');
    const snap: RegistrySnapshot = { revision: listing.revision, services: new Map(), pods: new Map(), slices: new Map() };
    for (const kv of listing.items) {
      const entry = parseEntry(kv.key, kv.value);
      if (entry) (snap[entry.kind] as Map<string, unknown>).set(entry.id, entry.record);
    }
    return snap;
  }

  private async listOf<T>(prefix: string): Promise<T[]> {
    const listing = await this.store.list(prefix);
    return listing.items.map((kv) => decodeRecord<T>(kv.value)).filter((v): v is T => v !== undefined);
  }

  private async changePod(ns: string, name: string, fn: (cur: PodRecord) => PodRecord): Promise<PodRecord> {
    const { pod } = await this.updatePod(ns, name, (cur) => {
      if (!cur) throw new RegistryError('not-found', `pod ${ns}/${name} does not exist; list pods with weft pod get -n ${ns}`);
      return fn(cur);
    });
    return pod!;
  }

  /** Read, change, compare-and-swap; again on a lost race. */
  private async updatePod(ns: string, name: string, fn: (cur: PodRecord | undefined) => PodRecord): Promise<{ pod: PodRecord | undefined; changed: boolean }> {
    const key = podStoreKey(ns, name);
    for (;;) {
      const kv = await this.store.get(key);
      const cur = kv && decodeRecord<PodRecord>(kv.value);
      const next = fn(cur);
      const value = JSON.stringify(next);
      if (kv?.value === value) return { pod: next, changed: false };
      const wrote = kv ? await this.store.replaceIfValue(key, kv.value, value) : await this.store.createIfAbsent(key, value);
      if (wrote !== false) return { pod: next, changed: true };
    }
  }

  /** What applying one Service means: its ClusterIP and NodePorts (kept, asked for, or to allocate), and what to free. */
  private plan(doc: Manifest & { kind: 'Service' }, old: Service | undefined, issues: ManifestIssue[]): ServicePlan {
    const input = doc.service;
    const owner = serviceKey(input);
    const fail = (path: string, message: string) => issues.push(issue(doc, path, message));
    const plan: ServicePlan = { doc, input, old, owner, ports: input.ports.map((p) => ({ ...p })), free: [], reserve: [], allocateIp: false };
    const oldIp = old?.type === 'ExternalName' ? undefined : old?.clusterIP;
    if (input.type !== 'ExternalName') {
      if (input.clusterIP !== undefined) {
        if (oldIp !== undefined && oldIp !== input.clusterIP)
          fail('spec.clusterIP', `is immutable: the Service has ${oldIp}; leave spec.clusterIP out (or write ${oldIp}), or delete the Service first`);
        else if (input.clusterIP !== 'None') {
          const why = this.cidr.refuse(input.clusterIP);
          if (why) fail('spec.clusterIP', `${why}; leave spec.clusterIP out to get one allocated, or pick one inside ${this.cidr.text}`);
          else if (oldIp === undefined) plan.reserve.push({ key: clusterIpKey(input.clusterIP), path: 'spec.clusterIP', what: `clusterIP ${input.clusterIP}` });
        }
        plan.clusterIP = input.clusterIP;
      } else if (oldIp !== undefined) {
        plan.clusterIP = oldIp;
      } else {
        plan.allocateIp = true;
      }
    }
    if (oldIp !== undefined && oldIp !== 'None' && plan.clusterIP !== oldIp) plan.free.push(clusterIpKey(oldIp));

    const oldPorts = old?.type === 'NodePort' ? old.ports : [];
    for (const [i, p] of plan.ports.entries()) {
      if (input.type !== 'NodePort') continue;
      if (p.nodePort !== undefined) {
        if (p.nodePort < NODE_PORT_RANGE.min || p.nodePort > NODE_PORT_RANGE.max)
          fail(
            `spec.ports[${i}].nodePort`,
            `${p.nodePort} is outside the NodePort range ${NODE_PORT_RANGE.min}-${NODE_PORT_RANGE.max}; leave it out to get one allocated, or pick one inside`,
          );
      } else {
        const kept = oldPorts.find((q) => q.port === p.port && q.protocol === p.protocol)?.nodePort;
        if (kept !== undefined) p.nodePort = kept;
      }
    }
    const held = new Set(oldPorts.map((q) => q.nodePort));
    for (const [i, p] of plan.ports.entries()) {
      if (p.nodePort !== undefined && !held.has(p.nodePort) && !plan.ports.slice(0, i).some((o) => o.nodePort === p.nodePort))
        plan.reserve.push({ key: nodePortKey(p.nodePort), path: `spec.ports[${i}].nodePort`, what: `nodePort ${p.nodePort}` });
    }
    const keep = new Set(plan.ports.map((p) => p.nodePort).filter((n) => n !== undefined));
    for (const q of oldPorts) if (q.nodePort !== undefined && !keep.has(q.nodePort)) plan.free.push(nodePortKey(q.nodePort));
    return plan;
  }

  private async reserveAll(plans: ServicePlan[], reserved: { key: string; owner: string }[], issues: ManifestIssue[]): Promise<void> {
    const wanted = plans.flatMap((p) => p.reserve.map((r) => ({ ...r, p })));
    const created = await createEach(
      this.store,
      wanted.map((w) => ({ key: w.key, value: w.p.owner })),
    );
    await mapLimit(wanted, async (w, i) => {
      const r: Reservation = created[i] ? { result: 'new' } : await reserve(this.store, w.key, w.p.owner);
      if (r.result === 'new') reserved.push({ key: w.key, owner: w.p.owner });
      if (r.result === 'taken')
        issues.push(issue(w.p.doc, w.path, `${w.what} is already taken by Service ${r.by}; leave it out to get a free one allocated, or pick another`));
    });
    if (issues.length > 0) return;
    const askedIps = new Set(plans.map((p) => p.clusterIP).filter((ip): ip is string => ip !== undefined && ip !== 'None'));
    const needIp = plans.filter((p) => p.allocateIp);
    const ips = await new ClusterIpPicker(this.store, this.cidr, askedIps).allocate(
      needIp.map((p) => p.owner),
      reserved,
    );
    for (const [i, p] of needIp.entries()) p.clusterIP = ips[i]!;
    const askedPorts = new Set(plans.flatMap((p) => p.ports.map((q) => q.nodePort)).filter((n): n is number => n !== undefined));
    const picker = new NodePortPicker(this.store, askedPorts);
    for (const p of plans) {
      for (const q of p.ports) {
        if (p.input.type !== 'NodePort' || q.nodePort !== undefined) continue;
        q.nodePort = await picker.allocate(p.owner);
        reserved.push({ key: nodePortKey(q.nodePort), owner: p.owner });
      }
    }
  }

  private async undo(reserved: { key: string; owner: string }[]): Promise<void> {
    await mapLimit(reserved, ({ key, owner }) => release(this.store, key, owner).catch(() => false));
  }
}

/** The stored form of a planned Service, and whether writing it changes anything. */
function serviceRecord(p: ServicePlan): { result: ApplyResult; value: string } {
  const { input, old } = p;
  const svc: Service = {
    namespace: input.namespace,
    name: input.name,
    labels: input.labels,
    type: input.type,
    ...(p.clusterIP !== undefined && { clusterIP: p.clusterIP }),
    ports: p.ports,
    ...(input.selector && { selector: input.selector }),
    sessionAffinity: input.sessionAffinity,
    affinityTimeoutSeconds: input.affinityTimeoutSeconds,
    externalTrafficPolicy: input.externalTrafficPolicy,
    internalTrafficPolicy: input.internalTrafficPolicy,
    ...(input.externalName !== undefined && { externalName: input.externalName }),
    uid: old?.uid ?? randomUUID(),
    creationTimestamp: old?.creationTimestamp ?? new Date().toISOString(),
  };
  const value = JSON.stringify(svc);
  const action: ApplyAction = !old ? 'created' : JSON.stringify(old) === value ? 'unchanged' : 'configured';
  return { result: { kind: 'Service', namespace: svc.namespace, name: svc.name, action, service: svc }, value };
}

interface ServicePlan {
  doc: Manifest & { kind: 'Service' };
  input: ServiceInput;
  old: Service | undefined;
  owner: string;
  clusterIP?: string;
  allocateIp: boolean;
  ports: Service['ports'];
  /** Allocation keys the old version held and the new one does not. */
  free: string[];
  /** Asked-for ClusterIP and NodePorts the Service does not hold yet. */
  reserve: { key: string; path: string; what: string }[];
}

/** Two documents of one apply asking for the same ClusterIP or NodePort. */
function checkBatchClashes(plans: ServicePlan[], issues: ManifestIssue[]): void {
  const ips = new Map<string, string>();
  const ports = new Map<number, string>();
  for (const p of plans) {
    if (p.clusterIP !== undefined && p.clusterIP !== 'None') {
      const other = ips.get(p.clusterIP);
      if (other !== undefined && other !== p.owner)
        issues.push(issue(p.doc, 'spec.clusterIP', `clusterIP ${p.clusterIP} is also asked for by Service ${other} in this apply; pick another`));
      else ips.set(p.clusterIP, p.owner);
    }
    for (const [i, q] of p.ports.entries()) {
      if (q.nodePort === undefined) continue;
      const other = ports.get(q.nodePort);
      if (other !== undefined && other !== p.owner)
        issues.push(issue(p.doc, `spec.ports[${i}].nodePort`, `nodePort ${q.nodePort} is also asked for by Service ${other} in this apply; pick another`));
      else ports.set(q.nodePort, p.owner);
    }
  }
}

function allocationKeys(svc: Service): string[] {
  const keys: string[] = [];
  if (svc.type !== 'ExternalName' && svc.clusterIP !== undefined && svc.clusterIP !== 'None') keys.push(clusterIpKey(svc.clusterIP));
  for (const p of svc.ports) if (p.nodePort !== undefined && !keys.includes(nodePortKey(p.nodePort))) keys.push(nodePortKey(p.nodePort));
  return keys;
}

function keyOf(d: Manifest): string {
  const o = d.kind === 'Service' ? d.service : d.kind === 'EndpointSlice' ? d.slice : d.pod;
  return serviceKey(o);
}

function issue(d: Manifest, path: string, message: string): ManifestIssue {
  return { ...(d.doc && { doc: d.doc }), object: `${d.kind} ${keyOf(d)}`, path, message };
}

function newPod(namespace: string, name: string): PodRecord {
  return { namespace, name, labels: {}, ports: [], ready: true, terminating: false, uid: randomUUID(), creationTimestamp: new Date().toISOString() };
}

function setOptional<T extends object, K extends keyof T>(o: T, key: K, value: T[K] | undefined): void {
  if (value === undefined) delete o[key];
  else o[key] = value;
}

export type RegistryEntry =
  | { kind: 'services'; id: string; record: Service }
  | { kind: 'pods'; id: string; record: PodRecord }
  | { kind: 'slices'; id: string; record: EndpointSliceRecord };

/** A store key and value as a registry object keyed by `ns/name`; undefined for allocation keys and anything unreadable. */
export function parseEntry(key: string, value: string): RegistryEntry | undefined {
  const kind = entryKind(key);
  if (!kind) return undefined;
  const record = decodeRecord<Service & PodRecord & EndpointSliceRecord>(value);
  if (!record) return undefined;
  return { kind, id: key.slice(key.indexOf('/') + 1), record };
}

export function entryKind(key: string): RegistryEntry['kind'] | undefined {
  if (key.startsWith(SERVICES_PREFIX)) return 'services';
  if (key.startsWith(PODS_PREFIX)) return 'pods';
  if (key.startsWith(SLICES_PREFIX)) return 'slices';
  return undefined;
}
