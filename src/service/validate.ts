import { isIPv4 } from 'node:net';
import type { ContainerPort, EndpointSliceRecord, PodRecord, Protocol, Service, ServicePort, ServiceType, TrafficPolicy } from './types.js';

/**
 * Validation of Service, EndpointSlice and Pod objects as the Kubernetes API server does it (the
 * subset of fields Weft uses; any other field is rejected, as `kubectl apply` with strict field
 * validation does). Every problem is collected with the field's path and what to write instead.
 */

/** A Service as written: allocation (clusterIP, nodePorts) and identity (uid, creation time) still to come. */
export type ServiceInput = Omit<Service, 'uid' | 'creationTimestamp'>;

/** A Pod manifest's part that networking needs: metadata, spec.nodeName, spec.hostname, spec.containers[].ports[]. */
export type PodSpecInput = Pick<PodRecord, 'namespace' | 'name' | 'labels' | 'ports' | 'node' | 'hostname'>;

export interface Issue {
  /** `spec.ports[1].port`; '' for the document as a whole. */
  path: string;
  message: string;
}

export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10_800;
const MAX_AFFINITY_TIMEOUT_SECONDS = 86_400;
export const DEFAULT_NAMESPACE = 'default';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

/** Walks one object, recording issues against field paths. */
export class Checker {
  readonly issues: Issue[] = [];

  /** `defaultNamespace`: for objects whose metadata names none (kubectl's --namespace). */
  constructor(readonly defaultNamespace = DEFAULT_NAMESPACE) {}

  fail(path: string, message: string): undefined {
    this.issues.push({ path, message });
    return undefined;
  }

  object(path: string, v: unknown, allowed: readonly string[], unsupported: Record<string, string> = {}): Record<string, unknown> | undefined {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return this.fail(path, `must be a mapping (an object), not ${describe(v)}`);
    const o = v as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      if (allowed.includes(key)) continue;
      const at = join(path, key);
      if (key in unsupported) this.fail(at, `is not supported by weft: ${unsupported[key]}`);
      else this.fail(at, `unknown field "${key}"; the fields here are ${allowed.join(', ')}`);
    }
    return o;
  }

  string(path: string, v: unknown): string | undefined {
    if (typeof v !== 'string') return this.fail(path, `must be a string, not ${describe(v)}`);
    return v;
  }

  bool(path: string, v: unknown): boolean | undefined {
    if (typeof v !== 'boolean') return this.fail(path, `must be true or false, not ${describe(v)}`);
    return v;
  }

  array(path: string, v: unknown): unknown[] | undefined {
    if (!Array.isArray(v)) return this.fail(path, `must be a list, not ${describe(v)}`);
    return v as unknown[];
  }

  int(path: string, v: unknown, min: number, max: number, what: string): number | undefined {
    if (typeof v !== 'number' || !Number.isInteger(v)) return this.fail(path, `must be a whole number (${what}: ${min}-${max}), not ${describe(v)}`);
    if (v < min || v > max) return this.fail(path, `${v} is out of range; ${what} must be ${min}-${max}`);
    return v;
  }

  oneOf<T extends string>(path: string, v: unknown, choices: readonly T[], unsupported: readonly string[] = []): T | undefined {
    if (typeof v === 'string' && (choices as readonly string[]).includes(v)) return v as T;
    if (typeof v === 'string' && unsupported.includes(v)) return this.fail(path, `"${v}" is not supported by weft; use ${orList(choices)}`);
    return this.fail(path, `must be ${orList(choices)}, not ${describe(v)}`);
  }

  name(path: string, v: unknown, kind: 'label' | 'label1035' | 'subdomain'): string | undefined {
    const s = this.string(path, v);
    if (s === undefined) return undefined;
    const [re, max, rule] =
      kind === 'label1035'
        ? [DNS1035_LABEL, 63, 'a DNS label starting with a letter: lowercase letters, digits and "-", e.g. "my-service"']
        : kind === 'label'
          ? [DNS1123_LABEL, 63, 'a DNS label: lowercase letters, digits and "-", starting and ending with a letter or digit']
          : [DNS1123_SUBDOMAIN, 253, 'a DNS subdomain: lowercase letters, digits, "-" and ".", e.g. "web-0"'];
    if (s.length > max || !re.test(s)) return this.fail(path, `"${s}" is not valid: must be ${rule}, at most ${max} characters`);
    return s;
  }

  labels(path: string, v: unknown): Record<string, string> {
    if (v === undefined || v === null) return {};
    const o = this.object(path, v, Object.keys(v));
    if (!o) return {};
    const out: Record<string, string> = {};
    for (const [key, value] of Object.entries(o)) {
      const at = `${path}[${JSON.stringify(key)}]`;
      if (!validLabelKey(key)) this.fail(at, `"${key}" is not a valid label key: [prefix/]name, the name at most 63 of letters, digits, "-", "_", "."`);
      const s = this.string(at, value);
      if (s === undefined) continue;
      if (!validLabelValue(s))
        this.fail(at, `"${s}" is not a valid label value: at most 63 letters, digits, "-", "_", ".", starting and ending with a letter or digit (or empty)`);
      else out[key] = s;
    }
    return out;
  }

  ipv4(path: string, v: unknown): string | undefined {
    const s = this.string(path, v);
    if (s === undefined) return undefined;
    if (!isIPv4(s)) return this.fail(path, `"${s}" is not an IPv4 address`);
    return s;
  }

  protocol(path: string, v: unknown): Protocol | undefined {
    if (v === undefined) return 'TCP';
    return this.oneOf(path, v, ['TCP', 'UDP'] as const, ['SCTP']);
  }

  /** A port name as Kubernetes' IANA_SVC_NAME: at most 15 lowercase letters, digits and "-", with a letter, no "--". */
  portName(path: string, v: unknown): string | undefined {
    const s = this.string(path, v);
    if (s === undefined) return undefined;
    if (!validPortName(s))
      return this.fail(
        path,
        `"${s}" is not a valid port name: at most 15 lowercase letters, digits and "-", with at least one letter, no "--", no "-" at either end`,
      );
    return s;
  }
}

export function validLabelKey(key: string): boolean {
  const slash = key.lastIndexOf('/');
  const [prefix, name] = slash < 0 ? [undefined, key] : [key.slice(0, slash), key.slice(slash + 1)];
  if (prefix !== undefined && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) return false;
  return name.length <= 63 && LABEL_NAME.test(name);
}

export function validLabelValue(s: string): boolean {
  return s.length <= 63 && LABEL_VALUE.test(s);
}

export function validPortName(s: string): boolean {
  return s.length > 0 && s.length <= 15 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(s) && /[a-z]/.test(s) && !s.includes('--');
}

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);
const orList = (xs: readonly string[]) => (xs.length < 2 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`);

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return JSON.stringify(v);
}

export interface Metadata {
  name: string;
  namespace: string;
  labels: Record<string, string>;
}

const METADATA_FIELDS = ['name', 'namespace', 'labels', 'annotations', 'uid', 'resourceVersion', 'creationTimestamp', 'generation', 'managedFields'];

export function checkMetadata(c: Checker, v: unknown, nameKind: 'label1035' | 'subdomain'): Metadata | undefined {
  const m = c.object('metadata', v, METADATA_FIELDS, { generateName: 'give metadata.name', ownerReferences: 'weft has no garbage collector; remove it' });
  if (!m) return undefined;
  const name = m.name === undefined ? c.fail('metadata.name', 'is required; give the object a name') : c.name('metadata.name', m.name, nameKind);
  const namespace = m.namespace === undefined ? c.defaultNamespace : c.name('metadata.namespace', m.namespace, 'label');
  const labels = c.labels('metadata.labels', m.labels);
  if (m.annotations !== undefined) c.object('metadata.annotations', m.annotations, Object.keys(m.annotations as object));
  return name !== undefined && namespace !== undefined ? { name, namespace, labels } : undefined;
}

const SERVICE_SPEC_FIELDS = [
  'type',
  'clusterIP',
  'clusterIPs',
  'ports',
  'selector',
  'sessionAffinity',
  'sessionAffinityConfig',
  'externalTrafficPolicy',
  'internalTrafficPolicy',
  'externalName',
  'ipFamilies',
  'ipFamilyPolicy',
];
const SERVICE_SPEC_UNSUPPORTED = {
  externalIPs: 'reach the Service by its ClusterIP or a NodePort',
  loadBalancerIP: 'weft has no load balancers; use type NodePort',
  loadBalancerSourceRanges: 'weft has no load balancers; use type NodePort',
  loadBalancerClass: 'weft has no load balancers; use type NodePort',
  allocateLoadBalancerNodePorts: 'weft has no load balancers; use type NodePort',
  healthCheckNodePort: 'weft has no load balancers; use type NodePort',
  publishNotReadyAddresses: 'remove it; not-ready endpoints are left out',
  trafficDistribution: 'use internalTrafficPolicy',
};

/** A Service manifest's body (after apiVersion/kind) as a ServiceInput; undefined when `c` got issues. */
export function checkService(c: Checker, doc: Record<string, unknown>): ServiceInput | undefined {
  const meta = checkMetadata(c, doc.metadata, 'label1035');
  const spec =
    doc.spec === undefined
      ? c.fail('spec', 'is required (at least spec.ports, or spec.type ExternalName)')
      : c.object('spec', doc.spec, SERVICE_SPEC_FIELDS, SERVICE_SPEC_UNSUPPORTED);
  if (!spec) return undefined;
  const type: ServiceType | undefined =
    spec.type === undefined ? 'ClusterIP' : c.oneOf('spec.type', spec.type, ['ClusterIP', 'NodePort', 'ExternalName'] as const, ['LoadBalancer']);

  let clusterIP: string | undefined;
  if (spec.clusterIP !== undefined && spec.clusterIP !== '') {
    const raw = c.string('spec.clusterIP', spec.clusterIP);
    if (raw === 'None') clusterIP = 'None';
    else if (raw !== undefined) clusterIP = c.ipv4('spec.clusterIP', raw);
  }
  if (spec.clusterIPs !== undefined) {
    const list = c.array('spec.clusterIPs', spec.clusterIPs);
    if (list && (list.length > 1 || (list.length === 1 && list[0] !== spec.clusterIP)))
      c.fail('spec.clusterIPs', 'weft keeps one IPv4 ClusterIP: give spec.clusterIPs as [spec.clusterIP], or leave it out');
  }
  if (spec.ipFamilies !== undefined) {
    const list = c.array('spec.ipFamilies', spec.ipFamilies);
    if (list && list.some((f) => f !== 'IPv4')) c.fail('spec.ipFamilies', 'weft Services are IPv4 only: use [IPv4] or leave it out');
  }
  if (spec.ipFamilyPolicy !== undefined) c.oneOf('spec.ipFamilyPolicy', spec.ipFamilyPolicy, ['SingleStack'] as const, ['PreferDualStack', 'RequireDualStack']);

  let externalName: string | undefined;
  if (type === 'ExternalName') {
    if (spec.externalName === undefined)
      c.fail('spec.externalName', 'is required for type ExternalName: the DNS name the Service stands for, e.g. db.example.com');
    else externalName = c.name('spec.externalName', spec.externalName, 'subdomain');
    if (clusterIP !== undefined) c.fail('spec.clusterIP', 'must be left out for type ExternalName (it has no ClusterIP)');
  } else if (spec.externalName !== undefined) {
    c.fail('spec.externalName', `may only be set for type ExternalName; remove it or set spec.type: ExternalName`);
  }
  if (type === 'NodePort' && clusterIP === 'None') c.fail('spec.clusterIP', 'may not be None (headless) for type NodePort; remove it or use type ClusterIP');

  const ports = checkServicePorts(c, spec.ports, type, clusterIP === 'None');

  let selector: Record<string, string> | undefined;
  if (spec.selector !== undefined && spec.selector !== null) {
    selector = c.labels('spec.selector', spec.selector);
    if (Object.keys(selector).length === 0) selector = undefined;
  }

  const sessionAffinity = spec.sessionAffinity === undefined ? 'None' : c.oneOf('spec.sessionAffinity', spec.sessionAffinity, ['None', 'ClientIP'] as const);
  let affinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  if (spec.sessionAffinityConfig !== undefined) {
    const cfg = c.object('spec.sessionAffinityConfig', spec.sessionAffinityConfig, ['clientIP']);
    if (sessionAffinity === 'None')
      c.fail('spec.sessionAffinityConfig', 'must not be set when spec.sessionAffinity is None; remove it or set spec.sessionAffinity: ClientIP');
    const clientIP = cfg?.clientIP === undefined ? undefined : c.object('spec.sessionAffinityConfig.clientIP', cfg.clientIP, ['timeoutSeconds']);
    if (clientIP?.timeoutSeconds !== undefined)
      affinityTimeoutSeconds =
        c.int(
          'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
          clientIP.timeoutSeconds,
          1,
          MAX_AFFINITY_TIMEOUT_SECONDS,
          'the affinity timeout in seconds',
        ) ?? affinityTimeoutSeconds;
  }

  let externalTrafficPolicy: TrafficPolicy = 'Cluster';
  if (spec.externalTrafficPolicy !== undefined) {
    if (type !== 'NodePort')
      c.fail('spec.externalTrafficPolicy', 'may only be set for type NodePort (traffic from outside arrives through NodePorts); remove it');
    externalTrafficPolicy = c.oneOf('spec.externalTrafficPolicy', spec.externalTrafficPolicy, ['Cluster', 'Local'] as const) ?? 'Cluster';
  }
  const internalTrafficPolicy =
    spec.internalTrafficPolicy === undefined ? 'Cluster' : c.oneOf('spec.internalTrafficPolicy', spec.internalTrafficPolicy, ['Cluster', 'Local'] as const);

  if (!meta || !type || !ports || !sessionAffinity || !internalTrafficPolicy || c.issues.length > 0) return undefined;
  return {
    namespace: meta.namespace,
    name: meta.name,
    labels: meta.labels,
    type,
    ...(clusterIP !== undefined && { clusterIP }),
    ports,
    ...(selector && { selector }),
    sessionAffinity,
    affinityTimeoutSeconds,
    externalTrafficPolicy,
    internalTrafficPolicy,
    ...(externalName !== undefined && { externalName }),
  };
}

function checkServicePorts(c: Checker, v: unknown, type: ServiceType | undefined, headless: boolean): ServicePort[] | undefined {
  if (v === undefined || v === null) {
    if (type === 'ExternalName' || headless) return [];
    return c.fail('spec.ports', 'is required: list at least one port, e.g. [{port: 80, targetPort: 8080}]');
  }
  const list = c.array('spec.ports', v);
  if (!list) return undefined;
  if (list.length === 0 && type !== 'ExternalName' && !headless) return c.fail('spec.ports', 'must list at least one port');
  const ports: ServicePort[] = [];
  const names = new Map<string, number>();
  const pairs = new Map<string, number>();
  const nodePorts = new Map<string, number>();
  for (const [i, item] of list.entries()) {
    const at = `spec.ports[${i}]`;
    const p = c.object(at, item, ['name', 'protocol', 'port', 'targetPort', 'nodePort', 'appProtocol']);
    if (!p) continue;
    let name = '';
    if (p.name !== undefined && p.name !== '') name = c.name(`${at}.name`, p.name, 'label') ?? '';
    else if (list.length > 1) c.fail(`${at}.name`, 'is required when a Service has more than one port; name each port, e.g. "http"');
    if (name) {
      const first = names.get(name);
      if (first !== undefined) c.fail(`${at}.name`, `duplicate port name "${name}" (also spec.ports[${first}]); give each port its own name`);
      else names.set(name, i);
    }
    const protocol = c.protocol(`${at}.protocol`, p.protocol);
    const port =
      p.port === undefined ? c.fail(`${at}.port`, 'is required: the port the Service listens on (1-65535)') : c.int(`${at}.port`, p.port, 1, 65535, 'a port');
    if (port !== undefined && protocol) {
      const first = pairs.get(`${port}/${protocol}`);
      if (first !== undefined) c.fail(`${at}`, `duplicate port ${port}/${protocol} (also spec.ports[${first}]); each port and protocol may appear once`);
      else pairs.set(`${port}/${protocol}`, i);
    }
    let targetPort: number | string | undefined = port;
    if (p.targetPort !== undefined && p.targetPort !== 0) {
      if (typeof p.targetPort === 'number') targetPort = c.int(`${at}.targetPort`, p.targetPort, 1, 65535, 'a port number');
      else if (typeof p.targetPort === 'string') targetPort = c.portName(`${at}.targetPort`, p.targetPort);
      else targetPort = c.fail(`${at}.targetPort`, `must be a port number (1-65535) or a container port's name, not ${describe(p.targetPort)}`);
    }
    let nodePort: number | undefined;
    if (p.nodePort !== undefined && p.nodePort !== 0) {
      if (type !== 'NodePort') c.fail(`${at}.nodePort`, `may only be set for type NodePort; remove it or set spec.type: NodePort`);
      else nodePort = c.int(`${at}.nodePort`, p.nodePort, 1, 65535, 'a port');
      if (nodePort !== undefined && protocol) {
        const first = nodePorts.get(`${nodePort}/${protocol}`);
        if (first !== undefined) c.fail(`${at}.nodePort`, `duplicate nodePort ${nodePort}/${protocol} (also spec.ports[${first}])`);
        else nodePorts.set(`${nodePort}/${protocol}`, i);
      }
    }
    if (p.appProtocol !== undefined) c.string(`${at}.appProtocol`, p.appProtocol);
    if (protocol && port !== undefined && targetPort !== undefined)
      ports.push({ name, protocol, port, targetPort, ...(nodePort !== undefined && { nodePort }) });
  }
  return ports;
}

const SLICE_ENDPOINT_FIELDS = ['addresses', 'conditions', 'nodeName', 'hostname', 'targetRef', 'zone', 'hints', 'deprecatedTopology'];
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const MAX_SLICE_ENDPOINTS = 1000;
const MAX_SLICE_PORTS = 100;

/** An EndpointSlice manifest's body (discovery.k8s.io/v1) as a record; undefined when `c` got issues. */
export function checkEndpointSlice(c: Checker, doc: Record<string, unknown>): EndpointSliceRecord | undefined {
  const meta = checkMetadata(c, doc.metadata, 'subdomain');
  const serviceName = meta?.labels[SERVICE_NAME_LABEL];
  if (meta && serviceName === undefined)
    c.fail(`metadata.labels["${SERVICE_NAME_LABEL}"]`, 'is required: the name of the Service (without a selector) these endpoints belong to');
  if (serviceName !== undefined && (serviceName.length > 63 || !DNS1035_LABEL.test(serviceName)))
    c.fail(`metadata.labels["${SERVICE_NAME_LABEL}"]`, `"${serviceName}" is not a Service name (a DNS label starting with a letter)`);
  if (doc.addressType === undefined) c.fail('addressType', 'is required: IPv4');
  else c.oneOf('addressType', doc.addressType, ['IPv4'] as const, ['IPv6', 'FQDN']);

  const ports: EndpointSliceRecord['ports'] = [];
  if (doc.ports !== undefined && doc.ports !== null) {
    const list = c.array('ports', doc.ports) ?? [];
    if (list.length > MAX_SLICE_PORTS) c.fail('ports', `has ${list.length} ports; at most ${MAX_SLICE_PORTS}`);
    const names = new Map<string, number>();
    for (const [i, item] of list.entries()) {
      const at = `ports[${i}]`;
      const p = c.object(at, item, ['name', 'protocol', 'port', 'appProtocol']);
      if (!p) continue;
      const name = p.name === undefined || p.name === '' ? '' : (c.name(`${at}.name`, p.name, 'label') ?? '');
      const first = names.get(name);
      if (first !== undefined) c.fail(`${at}.name`, `duplicate port name "${name}" (also ports[${first}]); name each port after its Service port`);
      else names.set(name, i);
      const protocol = c.protocol(`${at}.protocol`, p.protocol);
      const port =
        p.port === undefined
          ? c.fail(`${at}.port`, 'is required: the port the endpoints listen on (1-65535)')
          : c.int(`${at}.port`, p.port, 1, 65535, 'a port');
      if (protocol && port !== undefined) ports.push({ name, protocol, port });
    }
  }

  const endpoints: EndpointSliceRecord['endpoints'] = [];
  const list = doc.endpoints === undefined || doc.endpoints === null ? [] : (c.array('endpoints', doc.endpoints) ?? []);
  if (list.length > MAX_SLICE_ENDPOINTS)
    c.fail('endpoints', `has ${list.length} endpoints; at most ${MAX_SLICE_ENDPOINTS} per EndpointSlice (split them over several slices)`);
  for (const [i, item] of list.entries()) {
    const at = `endpoints[${i}]`;
    const e = c.object(at, item, SLICE_ENDPOINT_FIELDS);
    if (!e) continue;
    const addresses =
      e.addresses === undefined
        ? c.fail(`${at}.addresses`, 'is required: the endpoint\'s IPv4 address, e.g. ["10.244.1.5"]')
        : c.array(`${at}.addresses`, e.addresses);
    if (addresses && (addresses.length < 1 || addresses.length > 100)) c.fail(`${at}.addresses`, `must hold 1 to 100 addresses, not ${addresses.length}`);
    const ips = (addresses ?? []).map((a, j) => c.ipv4(`${at}.addresses[${j}]`, a));
    const cond = e.conditions === undefined ? {} : c.object(`${at}.conditions`, e.conditions, ['ready', 'serving', 'terminating']);
    const flag = (key: 'ready' | 'serving' | 'terminating') =>
      cond?.[key] === undefined || cond[key] === null ? undefined : c.bool(`${at}.conditions.${key}`, cond[key]);
    const terminating = flag('terminating') ?? false;
    // Kubernetes reads an absent `ready` as ready (unknown state is taken to be ready), except for a terminating endpoint.
    const ready = flag('ready') ?? !terminating;
    const serving = flag('serving') ?? ready;
    if (ready && terminating)
      c.fail(`${at}.conditions.ready`, 'must be false for a terminating endpoint (ready = serving and not terminating); use serving for it');
    const nodeName = e.nodeName === undefined ? undefined : c.name(`${at}.nodeName`, e.nodeName, 'subdomain');
    const hostname = e.hostname === undefined ? undefined : c.name(`${at}.hostname`, e.hostname, 'label');
    if (ips.every((ip) => ip !== undefined))
      endpoints.push({
        addresses: ips,
        conditions: { ready, serving, terminating },
        ...(nodeName !== undefined && { nodeName }),
        ...(hostname !== undefined && { hostname }),
      });
  }
  if (!meta || serviceName === undefined || c.issues.length > 0) return undefined;
  return { namespace: meta.namespace, name: meta.name, serviceName, ports, endpoints };
}

const POD_SPEC_FIELDS = ['containers', 'nodeName', 'hostname', 'subdomain', 'restartPolicy', 'terminationGracePeriodSeconds'];
const POD_SPEC_UNSUPPORTED = {
  hostNetwork: 'weft pods have their own network namespace',
  initContainers: 'remove them; the lab runs one workload per pod',
  volumes: 'remove them; the lab runs no containers',
};
const CONTAINER_FIELDS = ['name', 'image', 'command', 'args', 'env', 'ports', 'resources', 'imagePullPolicy', 'workingDir', 'readinessProbe', 'livenessProbe'];

/** A Pod manifest's networking part; undefined when `c` got issues. */
export function checkPod(c: Checker, doc: Record<string, unknown>): PodSpecInput | undefined {
  const meta = checkMetadata(c, doc.metadata, 'subdomain');
  const spec =
    doc.spec === undefined
      ? c.fail('spec', 'is required: spec.containers with their ports')
      : c.object('spec', doc.spec, POD_SPEC_FIELDS, POD_SPEC_UNSUPPORTED);
  const ports: ContainerPort[] = [];
  const names = new Map<string, string>();
  const containers = spec
    ? spec.containers === undefined
      ? c.fail('spec.containers', 'is required: list at least one container')
      : c.array('spec.containers', spec.containers)
    : undefined;
  if (containers?.length === 0) c.fail('spec.containers', 'must list at least one container');
  for (const [i, item] of (containers ?? []).entries()) {
    const at = `spec.containers[${i}]`;
    const ct = c.object(at, item, CONTAINER_FIELDS, {
      volumeMounts: 'the lab runs no containers; remove it',
      securityContext: 'the lab runs no containers; remove it',
    });
    if (!ct) continue;
    if (ct.name === undefined) c.fail(`${at}.name`, 'is required: a name for the container');
    else c.name(`${at}.name`, ct.name, 'label');
    const list = ct.ports === undefined || ct.ports === null ? [] : (c.array(`${at}.ports`, ct.ports) ?? []);
    for (const [j, pv] of list.entries()) {
      const pat = `${at}.ports[${j}]`;
      const p = c.object(pat, pv, ['name', 'containerPort', 'protocol', 'hostPort', 'hostIP']);
      if (!p) continue;
      if (p.hostPort !== undefined || p.hostIP !== undefined)
        c.fail(`${pat}.hostPort`, 'is not supported by weft: use a NodePort Service to reach the pod from outside');
      const name = p.name === undefined ? undefined : c.portName(`${pat}.name`, p.name);
      if (name !== undefined) {
        const first = names.get(name);
        if (first !== undefined) c.fail(`${pat}.name`, `duplicate container port name "${name}" (also ${first}); port names are unique within a pod`);
        else names.set(name, pat);
      }
      const containerPort =
        p.containerPort === undefined
          ? c.fail(`${pat}.containerPort`, 'is required: the port the container listens on (1-65535)')
          : c.int(`${pat}.containerPort`, p.containerPort, 1, 65535, 'a port');
      const protocol = c.protocol(`${pat}.protocol`, p.protocol);
      if (containerPort !== undefined && protocol) ports.push({ ...(name !== undefined && { name }), containerPort, protocol });
    }
  }
  const node = spec?.nodeName === undefined ? undefined : c.name('spec.nodeName', spec.nodeName, 'subdomain');
  const hostname = spec?.hostname === undefined ? undefined : c.name('spec.hostname', spec.hostname, 'label');
  if (!meta || !spec || c.issues.length > 0) return undefined;
  return {
    namespace: meta.namespace,
    name: meta.name,
    labels: meta.labels,
    ports,
    ...(node !== undefined && { node }),
    ...(hostname !== undefined && { hostname }),
  };
}
