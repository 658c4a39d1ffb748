import { ManifestError, parseManifests, type Manifest, type PodSpecInput } from '../service/manifest.js';
import { serviceKey, type Endpoint, type PodRecord, type Service } from '../service/types.js';
import { addPod, inBatches, removePod, type OpOptions } from './lab.js';
import { refuseUnderlay, registryCall } from './registry.js';
import { LabError, readState, validatePodName, type LabState, type PodState } from './state.js';

/**
 * `weft lab apply/get/delete`: Kubernetes manifests against a lab. Services and EndpointSlices go to
 * the lab's registry as `weft service apply` writes them; a Pod's spec (labels, container ports,
 * node) is written first, then the pod is made through the CNI plugin like `lab pod add`, on its
 * spec.nodeName or else on the node with the fewest pods, its app listening on its containerPorts.
 */
export interface ApplyResult {
  kind: string;
  namespace: string;
  name: string;
  action: string;
  node?: string;
  ip?: string;
}

function parse(text: string, source: string): Manifest[] {
  try {
    return parseManifests(text, source);
  } catch (e) {
    if (e instanceof ManifestError) throw new LabError('invalid', `${e.message}\nnothing was applied`);
    throw e;
  }
}

const podKey = (p: { namespace?: string; name: string }) => `${p.namespace ?? 'default'}/${p.name}`;

/**
 * Which of the manifest's pods the lab has to make, each with its node: spec.nodeName, else the
 * least loaded node (counting the pods placed before it). A pod the lab runs already keeps its node.
 */
function place(s: LabState, pods: PodSpecInput[]): { spec: PodSpecInput; node: string; exists: boolean }[] {
  const load = new Map(s.nodes.filter((n) => !n.pending).map((n) => [n.name, s.pods.filter((p) => p.node === n.name).length]));
  return pods.map((spec) => {
    const there = s.pods.find((p) => p.name === spec.name);
    if (there) {
      if (podKey(there) !== podKey(spec)) {
        throw new LabError(
          'exists',
          `pod ${spec.name} exists in lab ${s.name} in namespace ${there.namespace ?? 'default'}: lab pods need names unique across namespaces`,
        );
      }
      return { spec, node: there.node, exists: true };
    }
    validatePodName(spec.name);
    if (spec.node !== undefined && !load.has(spec.node)) {
      throw new LabError(
        'no-node',
        `pod ${podKey(spec)} asks for node ${spec.node} (spec.nodeName), which lab ${s.name} does not have; it has ${[...load.keys()].join(', ')}`,
      );
    }
    const node = spec.node ?? [...load.entries()].reduce((a, b) => (b[1] < a[1] ? b : a), ['', Infinity])[0];
    if (!node) throw new LabError('no-node', `lab ${s.name} has no node to run pod ${podKey(spec)} on`);
    load.set(node, load.get(node)! + 1);
    return { spec, node, exists: false };
  });
}

export async function applyManifests(lab: string, text: string, source: string, o: OpOptions = {}): Promise<ApplyResult[]> {
  const docs = parse(text, source);
  const s = readState(lab);
  refuseUnderlay(s);
  const pods = place(
    s,
    docs.flatMap((m) => (m.kind === 'Pod' ? [m.pod] : [])),
  );
  // The spec records the node the pod is put on, as a scheduler's binding does.
  for (const p of pods) p.spec.node = p.node;
  const written = await registryCall(s, { op: 'apply', docs });
  const results: ApplyResult[] = written.results.map((r) => ({ ...r }));
  const fresh = pods.filter((p) => !p.exists);
  const made = new Map<string, PodState>();
  try {
    await inBatches(fresh, 8, async (p) => {
      const pod = await addPod(s, p.spec.name, p.node, {
        namespace: p.spec.namespace,
        ports: p.spec.ports.map((x) => ({ port: x.containerPort, protocol: x.protocol })),
        ...o,
      });
      made.set(podKey(p.spec), pod);
    });
  } catch (e) {
    const missing = fresh.filter((p) => !made.has(podKey(p.spec))).map((p) => podKey(p.spec));
    throw new LabError(
      'pod-failed',
      `${(e as Error).message}\nthe Services and pod specs were written; pods not made: ${missing.join(', ')} (apply the file again once the cause is fixed)`,
    );
  }
  for (const r of results) {
    const pod = r.kind === 'Pod' ? (made.get(podKey(r)) ?? s.pods.find((p) => podKey(p) === podKey(r))) : undefined;
    if (pod) Object.assign(r, { node: pod.node, ip: pod.ip, ...(made.has(podKey(r)) && { action: 'created' }) });
  }
  return results;
}

/** Removes what the manifests name: their pods (CNI DEL, namespace, spec record), Services and EndpointSlices. */
export async function deleteManifests(
  lab: string,
  text: string,
  source: string,
): Promise<{ kind: string; namespace: string; name: string; deleted: boolean }[]> {
  const docs = parse(text, source);
  const s = readState(lab);
  refuseUnderlay(s);
  const removed = new Set<string>();
  for (const m of docs) {
    if (m.kind !== 'Pod') continue;
    const pod = s.pods.find((p) => podKey(p) === podKey(m.pod));
    if (!pod) continue;
    await removePod(s, pod.name);
    removed.add(podKey(pod));
  }
  const r = await registryCall(s, { op: 'delete', docs });
  return r.results.map((x) => ({ ...x, deleted: x.deleted || (x.kind === 'Pod' && removed.has(podKey(x))) }));
}

export interface LabView {
  services: (Service & { endpoints: Endpoint[] })[];
  /** The registry's pods, with the lab's node and pod namespace where the lab runs them. */
  pods: (PodRecord & { lab?: { node: string; ns: string } })[];
}

export async function labView(s: LabState): Promise<LabView> {
  const v = await registryCall(s, { op: 'view' });
  const byKey = new Map(s.pods.map((p) => [podKey(p), p]));
  return {
    services: v.services.map((svc) => ({ ...svc, endpoints: v.endpoints[serviceKey(svc)] ?? [] })),
    pods: v.pods.map((p) => {
      const mine = byKey.get(podKey(p));
      return mine ? { ...p, lab: { node: mine.node, ns: mine.ns } } : p;
    }),
  };
}
