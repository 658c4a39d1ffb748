import { LineCounter, parseAllDocuments } from 'yaml';
import type { EndpointSliceRecord, Service } from './types.js';
import { Checker, checkEndpointSlice, checkPod, checkService, type Issue, type PodSpecInput, type ServiceInput } from './validate.js';

export type { PodSpecInput, ServiceInput } from './validate.js';

/** Where a document came from: the file (or `-`) and its 1-based position among the documents in it. */
export interface DocSource {
  source: string;
  /** 1-based, counting every document of the file, empty ones included. */
  index: number;
  line: number;
}

export type Manifest = (
  { kind: 'Service'; service: ServiceInput } | { kind: 'EndpointSlice'; slice: EndpointSliceRecord } | { kind: 'Pod'; pod: PodSpecInput }
) & {
  doc?: DocSource;
};

export interface ManifestIssue extends Issue {
  doc?: DocSource;
  /** `Service default/web`, when the document got that far. */
  object?: string;
}

/** One or more invalid documents: every issue found, each naming the document and the field. */
export class ManifestError extends Error {
  override name = 'ManifestError';
  readonly issues: ManifestIssue[];

  constructor(issues: ManifestIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.issues = issues;
  }
}

export function formatIssue(i: ManifestIssue): string {
  const where = i.doc ? `${i.doc.source}: document ${i.doc.index} (line ${i.doc.line}${i.object ? `, ${i.object}` : ''})` : (i.object ?? 'manifest');
  return `${where}: ${i.path ? `${i.path}: ` : ''}${i.message}`;
}

const KINDS: Record<string, string> = { Service: 'v1', Pod: 'v1', EndpointSlice: 'discovery.k8s.io/v1' };

/**
 * Parses a file of Kubernetes manifests (YAML, one or several documents separated by `---`, or
 * JSON) into validated Service, EndpointSlice and Pod inputs. Throws a ManifestError listing every
 * problem of every document when any is invalid, so a caller writes all or nothing.
 */
export function parseManifests(text: string, source: string): Manifest[] {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const issues: ManifestIssue[] = [];
  const out: Manifest[] = [];
  const list = Array.isArray(docs) ? docs : [];
  if (!Array.isArray(docs)) issues.push({ path: '', message: 'is not a YAML document stream' });
  for (const [i, d] of list.entries()) {
    const doc: DocSource = { source, index: i + 1, line: lines.linePos(d.contents?.range[0] ?? d.range[0]).line };
    if (d.errors.length > 0) {
      for (const e of d.errors)
        issues.push({ doc: { ...doc, line: lines.linePos(e.pos[0]).line }, path: '', message: `not valid YAML: ${e.message.split('\n')[0]}` });
      continue;
    }
    const value: unknown = d.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    const m = checkDocument(value);
    if ('issues' in m) issues.push(...m.issues.map((x) => ({ ...x, doc, ...(m.object && { object: m.object }) })));
    else out.push({ ...m.manifest, doc });
  }
  if (issues.length > 0) throw new ManifestError(issues);
  if (out.length === 0)
    throw new ManifestError([{ doc: { source, index: 1, line: 1 }, path: '', message: 'holds no documents; write a Service, EndpointSlice or Pod manifest' }]);
  return out;
}

function checkDocument(value: unknown): { manifest: Manifest } | { issues: Issue[]; object?: string } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { issues: [{ path: '', message: 'must be a mapping with apiVersion, kind and metadata (a Kubernetes object)' }] };
  }
  const doc = value as Record<string, unknown>;
  const kind = doc.kind;
  if (typeof kind !== 'string' || !(kind in KINDS)) {
    return {
      issues: [
        {
          path: 'kind',
          message: `${kind === undefined ? 'is required' : `${JSON.stringify(kind)} is not supported`}; weft takes Service, EndpointSlice and Pod`,
        },
      ],
    };
  }
  const meta = doc.metadata as { name?: unknown; namespace?: unknown } | undefined;
  const object = typeof meta?.name === 'string' ? `${kind} ${typeof meta.namespace === 'string' ? meta.namespace : 'default'}/${meta.name}` : kind;
  const c = new Checker();
  const fields =
    kind === 'EndpointSlice' ? ['apiVersion', 'kind', 'metadata', 'addressType', 'endpoints', 'ports'] : ['apiVersion', 'kind', 'metadata', 'spec', 'status'];
  c.object('', value, fields);
  if (doc.apiVersion !== KINDS[kind]) c.fail('apiVersion', `must be ${KINDS[kind]} for kind ${kind}, not ${JSON.stringify(doc.apiVersion ?? null)}`);
  let manifest: Manifest | undefined;
  if (kind === 'Service') {
    const service = checkService(c, doc);
    if (service) manifest = { kind, service };
  } else if (kind === 'EndpointSlice') {
    const slice = checkEndpointSlice(c, doc);
    if (slice) manifest = { kind, slice };
  } else {
    const pod = checkPod(c, doc);
    if (pod) manifest = { kind: 'Pod', pod };
  }
  if (c.issues.length > 0 || !manifest) return { issues: c.issues, object };
  return { manifest };
}

/** A stored Service as the Kubernetes object `kubectl get -o yaml` would show (and `weft service apply` takes back). */
export function serviceObject(s: Service): Record<string, unknown> {
  const ports = s.ports.map((p) => ({
    ...(p.name && { name: p.name }),
    protocol: p.protocol,
    port: p.port,
    ...(s.type !== 'ExternalName' && { targetPort: p.targetPort }),
    ...(p.nodePort !== undefined && { nodePort: p.nodePort }),
  }));
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: s.name,
      namespace: s.namespace,
      ...(Object.keys(s.labels).length > 0 && { labels: s.labels }),
      uid: s.uid,
      creationTimestamp: s.creationTimestamp,
    },
    spec: {
      type: s.type,
      ...(s.clusterIP !== undefined && { clusterIP: s.clusterIP }),
      ...(s.externalName !== undefined && { externalName: s.externalName }),
      ...(ports.length > 0 && { ports }),
      ...(s.selector && { selector: s.selector }),
      sessionAffinity: s.sessionAffinity,
      ...(s.sessionAffinity === 'ClientIP' && { sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinityTimeoutSeconds } } }),
      ...(s.type === 'NodePort' && { externalTrafficPolicy: s.externalTrafficPolicy }),
      internalTrafficPolicy: s.internalTrafficPolicy,
    },
  };
}
