import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import type { EndpointSliceRecord, Service } from './types.js';
import { Checker, checkEndpointSlice, DEFAULT_NAMESPACE, checkPod, checkService, type Issue, type PodSpecInput, type ServiceInput } from './validate.js';

export type { PodSpecInput, ServiceInput } from './validate.js';

/**
 * The YAML parser (72 modules, a quarter of a second to load on a busy core) is loaded on the first
 * YAML manifest only: the agent and the lab's registry process load this file for its checks and
 * never parse YAML, and generated input takes the JSON path.
 */
const yaml = (): typeof Yaml => createRequire(import.meta.url)('yaml') as typeof Yaml;

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
 * problem of every document when any is invalid, so a caller writes all or nothing. Objects
 * without metadata.namespace go to `defaultNamespace`.
 */
export function parseManifests(text: string, source: string, defaultNamespace = DEFAULT_NAMESPACE): Manifest[] {
  const issues: ManifestIssue[] = [];
  const out: Manifest[] = [];
  for (const d of jsonDocuments(text) ?? yamlDocuments(text)) {
    const doc: DocSource = { source, index: d.index, line: d.line };
    if ('errors' in d) {
      for (const e of d.errors) issues.push({ doc: { ...doc, line: e.line }, path: '', message: `not valid YAML: ${e.message}` });
      continue;
    }
    if (d.value === null || d.value === undefined) continue;
    const m = checkDocument(d.value, defaultNamespace);
    if ('issues' in m) issues.push(...m.issues.map((x) => ({ ...x, doc, ...(m.object && { object: m.object }) })));
    else out.push({ ...m.manifest, doc });
  }
  if (issues.length > 0) throw new ManifestError(issues);
  if (out.length === 0)
    throw new ManifestError([{ doc: { source, index: 1, line: 1 }, path: '', message: 'holds no documents; write a Service, EndpointSlice or Pod manifest' }]);
  return out;
}

type RawDocument = { index: number; line: number } & ({ value: unknown } | { errors: { line: number; message: string }[] });

function yamlDocuments(text: string): RawDocument[] {
  const { LineCounter, parseAllDocuments } = yaml();
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (!Array.isArray(docs)) return [{ index: 1, line: 1, errors: [{ line: 1, message: 'not a YAML document stream' }] }];
  return docs.map((d, i) => {
    const at = { index: i + 1, line: lines.linePos(d.contents?.range[0] ?? d.range[0]).line };
    if (d.errors.length > 0) return { ...at, errors: d.errors.map((e) => ({ line: lines.linePos(e.pos[0]).line, message: e.message.split('\n')[0]! })) };
    return { ...at, value: d.toJS({ maxAliasCount: 100 }) as unknown };
  });
}

/**
 * The fast path for generated input (30,000 Services as JSON documents between `---` lines): JSON.parse
 * is some hundred times faster than a YAML parser. Undefined, for the YAML parser to read and report
 * on, unless every document is a JSON object.
 */
function jsonDocuments(text: string): RawDocument[] | undefined {
  if (!/^\s*(---[ \t]*\n\s*)?\{/.test(text)) return undefined;
  const out: RawDocument[] = [];
  const separator = /^---[ \t]*$/gm;
  let start = 0;
  let line = 1;
  const pieces: { body: string; line: number }[] = [];
  for (let m = separator.exec(text); ; m = separator.exec(text)) {
    const end = m ? m.index : text.length;
    pieces.push({ body: text.slice(start, end), line });
    if (!m) break;
    line += countLines(text, start, m.index + m[0].length);
    start = m.index + m[0].length;
  }
  let last = pieces.length - 1;
  while (last > 0 && pieces[last]!.body.trim() === '') last--;
  for (const [i, p] of pieces.entries()) {
    const body = p.body.trim();
    if (body === '' && (i === 0 || i > last)) continue;
    if (!body.startsWith('{')) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch {
      return undefined;
    }
    out.push({ index: out.length + 1, line: p.line + countLines(p.body, 0, p.body.length - p.body.trimStart().length), value });
  }
  return out;
}

function countLines(text: string, from: number, to: number): number {
  let n = 0;
  for (let i = text.indexOf('\n', from); i >= 0 && i < to; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

function checkDocument(value: unknown, defaultNamespace: string): { manifest: Manifest } | { issues: Issue[]; object?: string } {
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
  const object = typeof meta?.name === 'string' ? `${kind} ${typeof meta.namespace === 'string' ? meta.namespace : defaultNamespace}/${meta.name}` : kind;
  const c = new Checker(defaultNamespace);
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
