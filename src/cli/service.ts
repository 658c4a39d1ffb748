import { readFileSync } from 'node:fs';
import type { Registry } from '../service/registry.js';
import type { Endpoint, PodRecord, Service } from '../service/types.js';
import { validLabelKey, validLabelValue } from '../service/validate.js';
import { ETCD_ENDPOINTS, ETCD_OPTIONS, etcdOf, REGISTRY_PREFIX } from './agent.js';
import { JSON_OPTION, type Args, type CommandSpec, type GroupSpec, type OptionSpec } from './command.js';
import { table } from './format.js';
import { print, printJson, warn } from './output.js';
import { UsageError } from './usage.js';

/**
 * `weft service`, `weft endpoints` and `weft pod`: the Services and pods in etcd under Weft's
 * registry prefix, read and written as kubectl would, with the agent's etcd flags.
 */
const NAMESPACE: OptionSpec = {
  name: 'namespace',
  short: 'n',
  value: 'NS',
  default: 'default',
  check: (ns) => {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns) || ns.length > 63)
      throw new Error(`--namespace "${ns}" is not a DNS label (lowercase letters, digits, "-")`);
  },
  description: 'the namespace',
};

const STORE_OPTIONS: OptionSpec[] = [
  NAMESPACE,
  { ...ETCD_ENDPOINTS, default: 'http://127.0.0.1:2379', description: 'etcd holding the registry (and the leases)' },
  ...ETCD_OPTIONS,
  REGISTRY_PREFIX,
  JSON_OPTION,
];

const BOOL = { name: 'true|false', check: (v: string) => void parseBool(v) };

function parseBool(v: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new Error(`expected true or false, not "${v}"`);
}

/** A label change as `kubectl label` takes it: `k=v` sets, `k-` removes. */
function parseLabelChange(text: string): [string, string | null] {
  if (text.endsWith('-') && !text.includes('=')) return [text.slice(0, -1), null];
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`"${text}" is neither KEY=VALUE (set a label) nor KEY- (remove it)`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

/** Opens the registry (and, for liveness, flannel's prefix) on the command's etcd; closes both after `fn`. */
async function withRegistry<T>(a: Args, fn: (registry: Registry, live: () => Promise<(ip: string) => boolean>) => Promise<T>): Promise<T> {
  const etcd = etcdOf(a);
  const registryPrefix = a.str('registry-prefix')!;
  if (`${registryPrefix.replace(/\/+$/, '')}/`.startsWith(`${etcd.prefix.replace(/\/+$/, '')}/`))
    throw new UsageError(`--registry-prefix ${registryPrefix} lies inside flannel's --etcd-prefix ${etcd.prefix}; give Weft its own, e.g. /weft`);
  const [{ EtcdStore }, { Registry }] = await Promise.all([import('../store/etcd.js'), import('../service/registry.js')]);
  const tls = etcd.tls ? { tls: etcd.tls } : {};
  const store = new EtcdStore({ endpoints: etcd.endpoints, prefix: registryPrefix, ...tls });
  const flannel = new EtcdStore({ endpoints: etcd.endpoints, prefix: etcd.prefix, ...tls });
  try {
    return await fn(new Registry(store), async () => {
      const { leaseLiveness } = await import('../service/live.js');
      return leaseLiveness(flannel);
    });
  } finally {
    await Promise.all([store.close(), flannel.close()]);
  }
}

const formatLabels = (l: Record<string, string> | undefined) =>
  Object.entries(l ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

const formatServicePorts = (s: Service) =>
  s.ports.map((p) => `${p.name ? `${p.name}:` : ''}${p.port}${p.nodePort !== undefined ? `:${p.nodePort}` : ''}/${p.protocol}→${p.targetPort}`).join(' ');

function age(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86_400)}d`;
}

function servicesTable(list: Service[]): string {
  return table(
    ['name', 'type', 'cluster IP', 'ports (name:port[:nodePort]/proto→target)', 'selector', 'age'],
    list.map((s) => [
      s.name,
      s.type,
      s.clusterIP ?? s.externalName ?? '-',
      formatServicePorts(s) || '-',
      s.selector ? formatLabels(s.selector) : '(EndpointSlices)',
      age(s.creationTimestamp),
    ]),
  );
}

function podsTable(list: PodRecord[]): string {
  return table(
    ['name', 'node', 'IP', 'ready', 'labels', 'ports'],
    list.map((p) => [
      p.name,
      p.node ?? '-',
      p.ip ?? 'none',
      p.terminating ? 'terminating' : String(p.ready),
      formatLabels(p.labels) || '-',
      p.ports.map((c) => `${c.name ? `${c.name}:` : ''}${c.containerPort}/${c.protocol}`).join(' ') || '-',
    ]),
  );
}

const endpointState = (e: Endpoint) =>
  e.conditions.ready ? 'ready' : e.conditions.serving ? 'terminating, serving' : e.conditions.terminating ? 'terminating' : 'not ready';

export const serviceGroup: GroupSpec = { path: ['service'], summary: 'Services in etcd (kubectl-style)' };
export const podGroup: GroupSpec = { path: ['pod'], summary: "pods' labels and readiness in etcd (the endpoints of Services)" };

export const serviceCommands: CommandSpec[] = [
  {
    path: ['service', 'apply'],
    summary: 'create or update Services (and EndpointSlices, Pods) from manifests',
    details:
      'Every document is validated first, as the Kubernetes API server would; when any is invalid nothing is written. ClusterIPs come from 10.96.0.0/12 and NodePorts from 30000-32767 when the manifest has none.',
    options: [
      {
        name: 'filename',
        short: 'f',
        value: 'FILE',
        required: true,
        brief: true,
        description: 'Kubernetes manifests (YAML or JSON, one or more documents); - reads stdin',
      },
      ...STORE_OPTIONS,
    ],
    run: async (a) => {
      const file = a.str('filename')!;
      let text: string;
      try {
        text = readFileSync(file === '-' ? 0 : file, 'utf8');
      } catch (e) {
        throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
      }
      const { ManifestError, parseManifests } = await import('../service/manifest.js');
      try {
        const docs = parseManifests(text, file === '-' ? 'stdin' : file, a.str('namespace'));
        const results = await withRegistry(a, (r) => r.applyManifests(docs));
        if (a.bool('json')) printJson(results);
        else
          for (const r of results) {
            const s = r.service;
            const where =
              s?.clusterIP && s.clusterIP !== 'None'
                ? ` (${s.clusterIP}${s.ports.some((p) => p.nodePort) ? `, nodePorts ${s.ports.map((p) => p.nodePort).join(',')}` : ''})`
                : '';
            print(`${r.kind.toLowerCase()}/${r.name}${r.namespace === 'default' ? '' : ` -n ${r.namespace}`} ${r.action}${where}`);
          }
        return 0;
      } catch (e) {
        if (!(e instanceof ManifestError)) throw e;
        warn(`weft: nothing was written; ${e.issues.length === 1 ? 'a problem' : `${e.issues.length} problems`} to fix:`);
        for (const line of e.message.split('\n')) warn(`  ${line}`);
        return 1;
      }
    },
  },
  {
    path: ['service', 'get'],
    summary: 'list Services, or show one',
    positionals: [{ name: 'NAME', optional: true }],
    options: [
      {
        name: 'output',
        short: 'o',
        value: 'FORMAT',
        choices: ['table', 'json', 'yaml'],
        default: 'table',
        description: 'json and yaml print Kubernetes Service objects',
      },
      ...STORE_OPTIONS,
    ],
    run: async (a) => {
      const ns = a.str('namespace')!;
      const name = a.positionals[0];
      const list = await withRegistry(a, async (r) =>
        name === undefined ? r.listServices(ns) : [await r.getService(ns, name)].filter((s) => s !== undefined),
      );
      if (name !== undefined && list.length === 0) {
        warn(`weft: service ${ns}/${name} not found; list them with weft service get -n ${ns}`);
        return 1;
      }
      const format = a.bool('json') ? 'stored' : a.str('output');
      if (format === 'stored') {
        printJson(name === undefined ? list : list[0]);
        return 0;
      }
      if (format === 'table') {
        print(list.length === 0 ? `no Services in namespace ${ns}` : servicesTable(list));
        return 0;
      }
      const { serviceObject } = await import('../service/manifest.js');
      const objects = list.map(serviceObject);
      const value = name === undefined ? { apiVersion: 'v1', kind: 'List', items: objects } : objects[0];
      if (format === 'json') printJson(value);
      else {
        const { stringify } = await import('yaml');
        print(stringify(value).trimEnd());
      }
      return 0;
    },
  },
  {
    path: ['service', 'delete'],
    summary: 'delete a Service (its ClusterIP and NodePorts are freed)',
    positionals: [{ name: 'NAME' }],
    options: STORE_OPTIONS,
    run: async (a) => {
      const ns = a.str('namespace')!;
      const name = a.positionals[0]!;
      const deleted = await withRegistry(a, (r) => r.deleteService(ns, name));
      if (a.bool('json')) printJson({ namespace: ns, name, deleted });
      if (!deleted) {
        warn(`weft: service ${ns}/${name} not found; list them with weft service get -n ${ns}`);
        return 1;
      }
      if (!a.bool('json')) print(`service/${name} deleted`);
      return 0;
    },
  },
  {
    path: ['endpoints'],
    summary: "Services' endpoints (pods or EndpointSlices; nodes without a lease left out)",
    positionals: [{ name: 'NAME', optional: true }],
    options: STORE_OPTIONS,
    run: async (a) => {
      const ns = a.str('namespace')!;
      const name = a.positionals[0];
      const { endpointsOf } = await import('../service/endpoints.js');
      const rows = await withRegistry(a, async (r, liveness) => {
        const services = name === undefined ? await r.listServices(ns) : [await r.getService(ns, name)].filter((s) => s !== undefined);
        if (services.length === 0) return undefined;
        const [pods, slices, live] = await Promise.all([r.listPods(ns), r.listSlices(ns), liveness()]);
        return services.map((s) => ({ namespace: s.namespace, name: s.name, endpoints: endpointsOf(s, { pods, slices }, live) }));
      });
      if (rows === undefined && name !== undefined) {
        warn(`weft: service ${ns}/${name} not found; list them with weft service get -n ${ns}`);
        return 1;
      }
      if (a.bool('json')) {
        printJson(name === undefined ? (rows ?? []) : rows![0]);
        return 0;
      }
      if (!rows) {
        print(`no Services in namespace ${ns}`);
        return 0;
      }
      print(
        table(
          ['service', 'endpoint', 'node', 'state', 'ports', 'pod'],
          rows.flatMap((x) =>
            x.endpoints.length === 0
              ? [[x.name, '<none>', '', '', '', '']]
              : x.endpoints.map((e) => [
                  x.name,
                  e.ip,
                  e.nodeName ?? '-',
                  endpointState(e),
                  e.ports.map((p) => `${p.name ? `${p.name}:` : ''}${p.port}/${p.protocol}`).join(' ') || '-',
                  e.targetRef?.name ?? '-',
                ]),
          ),
        ),
      );
      return 0;
    },
  },
  {
    path: ['pod', 'get'],
    summary: 'list pods (labels, IP, node, readiness), or show one',
    positionals: [{ name: 'NAME', optional: true }],
    options: STORE_OPTIONS,
    run: async (a) => {
      const ns = a.str('namespace')!;
      const name = a.positionals[0];
      const list = await withRegistry(a, async (r) => (name === undefined ? r.listPods(ns) : [await r.getPod(ns, name)].filter((p) => p !== undefined)));
      if (name !== undefined && list.length === 0) {
        warn(`weft: pod ${ns}/${name} not found; list them with weft pod get -n ${ns}`);
        return 1;
      }
      if (a.bool('json')) printJson(name === undefined ? list : list[0]);
      else print(list.length === 0 ? `no pods in namespace ${ns}` : podsTable(list));
      return 0;
    },
  },
  {
    path: ['pod', 'label'],
    summary: "set (k=v) or remove (k-) a pod's labels",
    positionals: [
      { name: 'NAME' },
      {
        name: 'KEY=VALUE|KEY-',
        variadic: true,
        check: (v) => {
          const [key, value] = parseLabelChange(v);
          labelCheck(key, value);
        },
      },
    ],
    options: STORE_OPTIONS,
    run: (a) => {
      const changes = Object.fromEntries(a.positionals.slice(1).map(parseLabelChange));
      return podChange(
        a,
        (r, ns, name) => r.labelPod(ns, name, changes),
        (p) => `pod/${p.name} labeled: ${formatLabels(p.labels) || '(no labels)'}`,
      );
    },
  },
  {
    path: ['pod', 'ready'],
    summary: "set a pod's readiness (only ready pods get traffic)",
    positionals: [{ name: 'NAME' }, BOOL],
    options: STORE_OPTIONS,
    run: (a) => {
      const ready = parseBool(a.positionals[1]!);
      return podChange(
        a,
        (r, ns, name) => r.setPodReady(ns, name, ready),
        (p) => `pod/${p.name} ready=${p.ready}`,
      );
    },
  },
  {
    path: ['pod', 'terminating'],
    summary: 'mark a pod terminating (it serves only while no ready endpoint is left)',
    positionals: [{ name: 'NAME' }, BOOL],
    options: STORE_OPTIONS,
    run: (a) => {
      const terminating = parseBool(a.positionals[1]!);
      return podChange(
        a,
        (r, ns, name) => r.setPodTerminating(ns, name, terminating),
        (p) => `pod/${p.name} terminating=${p.terminating}`,
      );
    },
  },
];

function labelCheck(key: string, value: string | null): void {
  if (!validLabelKey(key)) throw new Error(`"${key}" is not a valid label key: [prefix/]name, the name at most 63 of letters, digits, "-", "_", "."`);
  if (value !== null && !validLabelValue(value))
    throw new Error(`"${value}" is not a valid label value: at most 63 letters, digits, "-", "_", ".", starting and ending with a letter or digit`);
}

async function podChange(a: Args, change: (r: Registry, ns: string, name: string) => Promise<PodRecord>, say: (p: PodRecord) => string): Promise<number> {
  const ns = a.str('namespace')!;
  const name = a.positionals[0]!;
  const { RegistryError } = await import('../service/registry.js');
  try {
    const pod = await withRegistry(a, (r) => change(r, ns, name));
    if (a.bool('json')) printJson(pod);
    else print(say(pod));
    return 0;
  } catch (e) {
    if (!(e instanceof RegistryError)) throw e;
    warn(`weft: ${e.message}`);
    return 1;
  }
}
