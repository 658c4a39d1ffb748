import { DEFAULT_CLUSTER_DNS, DEFAULT_CLUSTER_DOMAIN } from '../agent/dns.js';
import { listEntries } from '../kernel/conntrack.js';
import { netnsPath } from '../kernel/netns.js';
import { parseManifests } from '../service/manifest.js';
import { manifestText } from './demo.js';
import { execIn, inBatches } from './lab.js';
import { registryCall } from './registry.js';
import { labView } from './services.js';
import { controlSocket, type LabState, type PodState } from './state.js';
import { UPSTREAM_NAMES } from './upstream.js';
import type { CheckResult } from './verify.js';
import { onePerNode, slice } from './verify-services.js';
import { APP_PORT, probeFrom } from './workload.js';

/**
 * verify's "Service discovery" section: pods resolve through the real glibc stub (`getent`, with the
 * resolv.conf the CNI result gave them) and `dig`, against their own node's cluster DNS. It applies
 * a ClusterIP Service with a named port, a headless one and an ExternalName one (removed afterwards).
 */
const GROUP = 'Service discovery';
/** Client pods (one per node) resolving or inspected at once. */
const CLIENTS_AT_ONCE = 16;
const ZONE = DEFAULT_CLUSTER_DOMAIN;
const NAMES = { main: 'weft-verify-dns', headless: 'weft-verify-dns-headless', external: 'weft-verify-dns-ext' };
const SELECTOR = { app: 'echo' };
const OUTSIDE_NAME = 'example.test';
/** A new Service is resolvable within 100 ms p95; this leaves room for a loaded machine. */
const RESOLVABLE_WITHIN_MS = 10_000;

const fqdn = (name: string) => `${name}.default.svc.${ZONE}`;

/** `sample`: the backends named by EndpointSlices instead of the app=echo selector (a sampled lab, as verify-services.ts). */
function manifests(sample?: PodState[]): object[] {
  const svc = (name: string, spec: object) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec });
  const http = { name: 'http', protocol: 'TCP', port: APP_PORT, targetPort: APP_PORT };
  const select = sample ? {} : { selector: SELECTOR };
  const ports = [{ name: 'http', protocol: 'TCP' }];
  return [
    svc(NAMES.main, { ...select, ports: [http] }),
    svc(NAMES.headless, { clusterIP: 'None', ...select, ports: [http] }),
    ...(sample ? [slice(NAMES.main, sample, ports), slice(NAMES.headless, sample, ports)] : []),
    svc(NAMES.external, { type: 'ExternalName', externalName: OUTSIDE_NAME }),
  ];
}

type Run = { ok: boolean; out: string };

/** A command in the pod's namespace (its resolv.conf mounted by `ip netns exec`); `out` is stdout, or the error. */
async function inPod(pod: PodState, argv: string[]): Promise<Run> {
  try {
    const r = await execIn(pod.ns, argv);
    return { ok: true, out: r.stdout.trim() };
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string; code?: number };
    return { ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message.split('\n')[0]! };
  }
}

/** getent through glibc: the addresses it printed. `ahostsv4` lists every address, `hosts` the first. */
async function getent(pod: PodState, name: string, db = 'ahostsv4'): Promise<{ ips: string[]; run: Run }> {
  const run = await inPod(pod, ['getent', db, name]);
  const ips = run.ok
    ? [
        ...new Set(
          run.out
            .split('\n')
            .map((l) => l.split(/\s+/)[0]!)
            .filter(Boolean),
        ),
      ].sort()
    : [];
  return { ips, run };
}

const dig = (pod: PodState, ...args: string[]) => inPod(pod, ['dig', '+time=2', '+tries=2', ...args]);

/** Retries `fn` until `good` (a just-applied Service reaches every node's DNS by watch). */
async function until<T>(fn: () => Promise<T>, good: (t: T) => boolean): Promise<T> {
  const deadline = performance.now() + RESOLVABLE_WITHIN_MS;
  for (;;) {
    const r = await fn();
    if (good(r) || performance.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export async function dnsChecks(s: LabState, sampled: boolean): Promise<CheckResult[]> {
  const note = (evidence: string): CheckResult[] => [{ group: GROUP, check: 'dns', from: 'verify', to: 'the lab', ok: true, skipped: true, evidence }];
  if (s.backend === 'macvlan') return note('not available in underlay mode: it has no agents, so no cluster DNS (use an overlay lab)');
  const view = await labView(s);
  const byName = new Map(s.pods.map((p) => [p.name, p]));
  const echo = view.pods.filter((p) => p.namespace === 'default' && p.labels.app === SELECTOR.app && p.ip && p.ready && !p.terminating);
  const backends = sampled ? onePerNode(s, echo) : echo;
  if (backends.length === 0) return note('no ready pod of the lab carries app=echo (lab up labels its pods so): nothing to put behind a Service');
  const backendPods = backends.map((b) => byName.get(b.name)).filter((p): p is PodState => p !== undefined);
  // One client pod per node: every node answers from its own DNS.
  const clients = s.nodes.map((n) => s.pods.find((p) => p.node === n.name && !p.pending)).filter((p): p is PodState => p !== undefined);
  const docs = parseManifests(manifestText(manifests(sampled ? backendPods : undefined)), 'weft verify');
  const made = await registryCall(s, { op: 'apply', docs });
  try {
    const clusterIP = made.services.find((x) => x.name === NAMES.main)!.clusterIP!;
    const out = await checks(
      s,
      clients,
      clusterIP,
      backends.map((b) => b.ip!).sort(),
      backendPods,
      sampled ? `the ${backends.length} pods its EndpointSlice names` : 'the ready pods with app=echo',
    );
    return sampled
      ? [
          ...note(
            `a sampled lab: verify's DNS Services name one app=echo pod per node (${backends.length} of ${echo.length}) in EndpointSlices instead of selecting them all`,
          ),
          ...out,
        ]
      : out;
  } finally {
    await registryCall(s, { op: 'delete', docs });
  }
}

async function checks(s: LabState, clients: PodState[], clusterIP: string, ready: string[], backendPods: PodState[], readyAre: string): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const add = (check: string, from: PodState, to: string, ok: boolean, evidence: string) =>
    out.push({ group: GROUP, check, from: `${from.name} ${from.ip}`, to, ok, evidence });
  const client = clients[0]!;
  const resolved = (r: { ips: string[]; run: Run }, want: string[]) =>
    r.run.ok ? `glibc: ${r.ips.join(', ')}${same(r.ips, want) ? '' : ` (expected ${want.join(', ')})`}` : `glibc: ${r.run.out || 'not found'}`;

  const shortNames = await inBatches(clients, CLIENTS_AT_ONCE, (pod) =>
    until(
      () => getent(pod, NAMES.main),
      (x) => same(x.ips, [clusterIP]),
    ),
  );
  for (const [i, pod] of clients.entries()) {
    const r = shortNames[i]!;
    add('short name', pod, NAMES.main, same(r.ips, [clusterIP]), `${resolved(r, [clusterIP])} (search default.svc.${ZONE}, ${pod.node}'s DNS)`);
  }
  for (const [check, name] of [
    ['<svc>.<ns>', `${NAMES.main}.default`],
    ['FQDN', fqdn(NAMES.main)],
  ] as const) {
    const r = await getent(client, name);
    add(check, client, name, same(r.ips, [clusterIP]), resolved(r, [clusterIP]));
  }
  // The workload's HTTP client resolves through glibc too (getaddrinfo): a name, then a connection.
  const p = await probeFrom(controlSocket(s.name, client.name, 'app'), { proto: 'tcp', host: NAMES.main, port: APP_PORT });
  add(
    'connect by name',
    client,
    `${NAMES.main}:${APP_PORT}`,
    p.ok && backendPods.some((b) => b.name === p.seen.pod),
    p.ok ? `${p.seen.pod} answered through ${clusterIP}` : p.error,
  );

  const headless = await until(
    () => getent(client, NAMES.headless),
    (x) => same(x.ips, ready),
  );
  add('headless', client, NAMES.headless, same(headless.ips, ready), `${resolved(headless, ready)} (${readyAre})`);

  const srvName = `_http._tcp.${fqdn(NAMES.main)}`;
  const srv = await dig(client, '+short', 'SRV', srvName);
  const srvWant = `${APP_PORT} ${fqdn(NAMES.main)}.`;
  const srvOk = srv.ok && srv.out.split('\n').some((l) => l.endsWith(srvWant));
  add('SRV', client, srvName, srvOk, srv.ok ? `dig: ${srv.out.replace(/\n/g, '; ') || 'no answer'}` : srv.out);

  const ptr = await dig(client, '+short', '-x', clusterIP);
  const ptrWant = `${fqdn(NAMES.main)}.`;
  add('PTR', client, clusterIP, ptr.ok && ptr.out.split('\n').includes(ptrWant), ptr.ok ? `dig: ${ptr.out || 'no answer'}` : ptr.out);

  const ext = await dig(client, '+short', fqdn(NAMES.external));
  const extLines = ext.ok ? ext.out.split('\n') : [];
  add(
    'ExternalName',
    client,
    NAMES.external,
    extLines.includes(`${OUTSIDE_NAME}.`),
    ext.ok ? `dig: ${extLines.join(' → ') || 'no answer'} (CNAME to ${OUTSIDE_NAME})` : ext.out,
  );

  const outsideIp = UPSTREAM_NAMES[OUTSIDE_NAME]!;
  const up = await getent(client, OUTSIDE_NAME);
  add(
    'outside name',
    client,
    OUTSIDE_NAME,
    same(up.ips, [outsideIp]),
    `${resolved(up, [outsideIp])} (forwarded to the outside world's resolver ${s.outside.gateway})`,
  );

  const missing = `weft-verify-missing.default.svc.${ZONE}`;
  const nx = await dig(client, missing);
  const status = /status: (\w+)/.exec(nx.out)?.[1];
  add('missing name', client, missing, status === 'NXDOMAIN', status ? `dig: status ${status}` : nx.out.split('\n')[0]!);

  // Node-local: the queries above were answered on each pod's own node, past the service proxy and conntrack.
  const nodeOf = (pod: PodState) => s.nodes.find((n) => n.name === pod.node)!;
  const tracked = await Promise.all(
    clients.map((pod) =>
      listEntries(netnsPath(nodeOf(pod).ns)).then(
        (entries) => entries.filter((e) => e.orig.dst === DEFAULT_CLUSTER_DNS).length,
        (e: Error) => e,
      ),
    ),
  );
  for (const [i, pod] of clients.entries()) {
    const node = nodeOf(pod);
    const n = tracked[i]!;
    add(
      'node-local',
      pod,
      `${node.name} ${DEFAULT_CLUSTER_DNS}:53`,
      n === 0,
      typeof n === 'number' ? `${n} conntrack entries to ${DEFAULT_CLUSTER_DNS} on ${node.name} (answered on the node, no DNAT)` : n.message,
    );
  }
  return out;
}
