import { netnsPath } from '../kernel/netns.js';
import { parseManifests, type Manifest } from '../service/manifest.js';
import type { Service } from '../service/types.js';
import { manifestText } from './demo.js';
import { registryCall } from './registry.js';
import { labView } from './services.js';
import { controlSocket, type LabState, type NodeState, type PodState } from './state.js';
import type { CheckResult } from './verify.js';
import { APP_PORT, probe, probeFrom, secondTry, type Probe, type ProbeResult } from './workload.js';

/**
 * verify's "pod → Service" section. It puts its own Services in front of the pods labelled app=echo
 * (lab up labels its pods so) and removes them afterwards: a ClusterIP one with a TCP and a UDP port,
 * a NodePort one, one with ClientIP affinity, one whose selector matches nothing, and two without a
 * selector whose EndpointSlices name their endpoints: a NodePort one with externalTrafficPolicy Local
 * over the pods of one node (the other nodes must drop), and one holding only the client (hairpin). Service port 8080 leads to the pods' port 80, so every answer also shows the DNAT.
 */
const GROUP = 'pod → Service';
const PORT = 8080;
const NAMES = {
  main: 'weft-verify',
  nodePort: 'weft-verify-np',
  local: 'weft-verify-local',
  affinity: 'weft-verify-affinity',
  empty: 'weft-verify-empty',
  hairpin: 'weft-verify-hairpin',
};
const SELECTOR = { app: 'echo' };
/** Until every agent's proxy has the new Services, a positive check keeps trying this long. */
const PROGRAMMED_WITHIN_MS = 15_000;
/** "Refused at once": a rejected connection takes a round trip; this leaves room for a loaded machine. */
const REFUSED_WITHIN_MS = 500;
const AFFINITY_TIMEOUT_S = 300;

/**
 * Selectorless, so each can hold just the endpoints a check needs: `self` the client alone (hairpin),
 * `local` the backends of one node, and in a sampled lab one backend per node.
 */
export function slice(service: string, pods: PodState[], ports = [{ name: '', protocol: 'TCP' }]): object {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: ports.map((p) => ({ ...p, port: APP_PORT })),
    endpoints: pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true }, nodeName: p.node })),
  };
}

/** The first of `pods` on each node of the lab: a sampled lab's backends. */
export const onePerNode = <P extends { node?: string }>(s: LabState, pods: P[]): P[] => s.nodes.flatMap((n) => pods.find((p) => p.node === n.name) ?? []);

/**
 * verify's Services. `sample`: backends named by EndpointSlices instead of the app=echo selector (a
 * sampled lab: 1,000 endpoints in each of three Services cost every agent seconds of nft work).
 */
function manifests(client: PodState, local: PodState[], sample?: PodState[]): object[] {
  const svc = (name: string, spec: object) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec });
  const tcp = { protocol: 'TCP', port: PORT, targetPort: APP_PORT };
  const mainPorts = [
    { name: 'tcp', protocol: 'TCP' },
    { name: 'udp', protocol: 'UDP' },
  ];
  const select = sample ? {} : { selector: SELECTOR };
  return [
    svc(NAMES.main, { ...select, ports: mainPorts.map((p) => ({ ...p, port: PORT, targetPort: APP_PORT })) }),
    ...(sample ? [slice(NAMES.main, sample, mainPorts), slice(NAMES.nodePort, sample), slice(NAMES.affinity, sample)] : []),
    svc(NAMES.nodePort, { type: 'NodePort', ...select, ports: [tcp] }),
    svc(NAMES.local, { type: 'NodePort', externalTrafficPolicy: 'Local', ports: [tcp] }),
    slice(NAMES.local, local),
    svc(NAMES.affinity, {
      ...select,
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: AFFINITY_TIMEOUT_S } },
      ports: [tcp],
    }),
    svc(NAMES.empty, {
      selector: { app: 'weft-verify-nothing' },
      ports: [
        { name: 'tcp', ...tcp },
        { name: 'udp', protocol: 'UDP', port: PORT, targetPort: APP_PORT },
      ],
    }),
    svc(NAMES.hairpin, { ports: [tcp] }),
    slice(NAMES.hairpin, [client]),
  ];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Probes until `good` holds or the deadline passes (the proxies may not have the Service yet); the last result. */
async function until(probe: () => Promise<ProbeResult>, good: (r: ProbeResult) => boolean, withinMs = PROGRAMMED_WITHIN_MS): Promise<ProbeResult> {
  const deadline = performance.now() + withinMs;
  for (;;) {
    const r = await probe();
    if (good(r) || performance.now() > deadline) return r;
    await sleep(100);
  }
}

const answered = (r: ProbeResult) => r.ok;

/**
 * Up to `count` copies of one probe, sent in requests of up to `batch` that the client's runtime
 * runs together, `width` requests at a time; none starts once `enough` holds for those done.
 */
async function many(
  count: number,
  send: (n: number) => Promise<ProbeResult[]>,
  enough = (_: ProbeResult[]) => false,
  width = 4,
  batch = 25,
): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  let started = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, Math.ceil(count / batch)) }, async () => {
      while (started < count && !enough(out)) {
        const n = Math.min(batch, count - started);
        started += n;
        out.push(...(await send(n)));
      }
    }),
  );
  return out;
}

const tally = (rs: ProbeResult[]) => {
  const by = new Map<string, number>();
  for (const r of rs) if (r.ok) by.set(r.seen.pod, (by.get(r.seen.pod) ?? 0) + 1);
  return by;
};

/** Node → ClusterIP from a socket made in the node's namespace, as verify's node → pod checks. */
const fromNode = (node: NodeState, host: string, port: number): Promise<ProbeResult> =>
  probe(netnsPath(node.ns), { proto: 'tcp', host, port, timeoutMs: 2000 });

/**
 * Reads the registry and makes verify's Services at once, so that the agents program them while the
 * rest of verify runs; probes once `go` resolves, then removes them. Never rejects: a registry out of
 * reach is a failed check.
 */
export async function serviceChecks(s: LabState, go: Promise<void>, sampled: boolean): Promise<CheckResult[]> {
  const note = (evidence: string): CheckResult[] => [{ group: GROUP, check: 'services', from: 'verify', to: 'the lab', ok: true, skipped: true, evidence }];
  const broken = (what: string, e: unknown): CheckResult => ({
    group: GROUP,
    check: 'registry',
    from: 'verify',
    to: `etcd ${s.etcd.endpoint}`,
    ok: false,
    evidence: `${what}: ${(e as Error).message}`,
  });
  if (s.backend === 'macvlan')
    return note('not available in underlay mode: it has no agents, so no service proxy (use an overlay lab: weft lab up --mode overlay)');
  let made: { docs: Manifest[]; services: Service[]; client: PodState; backends: PodState[]; local: PodState[]; of: number } | undefined;
  try {
    const view = await labView(s);
    const labPods = new Map(s.pods.map((p) => [`${p.namespace ?? 'default'}/${p.name}`, p]));
    const echo = view.pods
      .filter((p) => p.namespace === 'default' && p.labels.app === SELECTOR.app && p.ip)
      .map((p) => labPods.get(`${p.namespace}/${p.name}`))
      .filter((p): p is PodState => p !== undefined);
    if (echo.length === 0) {
      await go;
      return note('no pod of the lab carries app=echo (lab up labels its pods so): nothing to put behind a Service');
    }
    const backends = sampled ? onePerNode(s, echo) : echo;
    const client = s.pods.find((p) => !backends.includes(p)) ?? backends[0]!;
    // The ETP Local Service's endpoints are on one node only, so that the other nodes show the drop.
    const local = backends.filter((b) => b.node === backends[0]!.node);
    const docs = parseManifests(manifestText(manifests(client, local, sampled ? backends : undefined)), 'weft verify');
    made = { docs, services: (await registryCall(s, { op: 'apply', docs })).services, client, backends, local, of: echo.length };
  } catch (e) {
    await go;
    return [broken("verify's Services could not be made", e)];
  }
  const { docs, services, client, backends, local, of } = made;
  await go;
  const svc = (name: string) => services.find((x) => x.name === name)!;
  const out = await checks(s, client, backends, local, {
    main: svc(NAMES.main),
    nodePort: svc(NAMES.nodePort),
    local: svc(NAMES.local),
    affinity: svc(NAMES.affinity),
    empty: svc(NAMES.empty),
    hairpin: svc(NAMES.hairpin),
  });
  const removed = await registryCall(s, { op: 'delete', docs }).then(
    () => undefined,
    (e: unknown) => broken(`verify's Services (${Object.values(NAMES).join(', ')}) could not be removed`, e),
  );
  const sample = sampled
    ? note(`a sampled lab: verify's Services name one app=echo pod per node (${backends.length} of ${of}) in EndpointSlices instead of selecting them all`)
    : [];
  return [...sample, ...out, ...(removed ? [removed] : [])];
}

async function checks(
  s: LabState,
  client: PodState,
  backends: PodState[],
  local: PodState[],
  svc: Record<keyof typeof NAMES, Service>,
): Promise<CheckResult[]> {
  const from = (pod: PodState) => (p: Probe) => probeFrom(controlSocket(s.name, pod.name, 'app'), p);
  let retried = 0;
  const copies = (p: Probe) => async (n: number) => {
    const send = (probes: Probe[]) => probeFrom(controlSocket(s.name, client.name, 'app'), probes);
    const probes = Array<Probe>(n).fill(p);
    const results = await secondTry(probes, await send(probes), send);
    retried += results.filter((r) => r.retried && r.result.ok).length;
    return results.map((r) => r.result as ProbeResult);
  };
  const outside = (p: Probe) => probeFrom(controlSocket(s.name, 'outside', 'app'), p);
  const pod = from(client);
  const who = `${client.name} ${client.ip}`;
  const at = (x: Service, port = PORT) => `${x.name} ${x.clusterIP}:${port}`;
  const ip = (x: Service) => x.clusterIP!;
  const out: CheckResult[] = [];
  const add = (check: string, fromText: string, to: string, ok: boolean, evidence: string) =>
    out.push({ group: GROUP, check, from: fromText, to, ok, evidence });
  const seen = (r: ProbeResult) => (r.ok ? `${r.seen.pod} answered on :${r.seen.port} and saw the client as ${r.seen.client}` : r.error);
  const nodePortOf = (x: Service) => x.ports[0]!.nodePort!;

  // Spread: every backend answers at least once. With B equally likely backends, B·ln(B·10⁵) connections
  // miss one only once in 10⁵ runs; it stops early once each has answered (and 2 per backend were made).
  const first = await until(() => pod({ proto: 'tcp', host: ip(svc.main), port: PORT }), answered);
  const b = backends.length;
  const everyOne = (rs: ProbeResult[]) => rs.length + 1 >= 2 * b && tally([first, ...rs]).size >= b;
  const spread = first.ok
    ? [first, ...(await many(Math.max(20, Math.ceil(b * Math.log(b * 1e5))), copies({ proto: 'tcp', host: ip(svc.main), port: PORT }), everyOne))]
    : [first];
  const spreadRetried = retried;
  const hits = tally(spread);
  const missing = backends.filter((b) => !hits.has(b.name)).map((b) => b.name);
  const failed = spread.filter((r) => !r.ok);
  add(
    'tcp spread',
    who,
    at(svc.main),
    failed.length === 0 && missing.length === 0,
    failed.length
      ? `${failed.length} of ${spread.length} connections failed: ${(failed[0] as { error: string }).error}`
      : `${spread.length} connections reached ${hits.size} of ${backends.length} backends (${[...hits].map(([n, c]) => `${n}×${c}`).join(' ')})${missing.length ? `; never: ${missing.join(', ')}` : ''}${spreadRetried ? `; ${spreadRetried} on a second try after a timeout` : ''}`,
  );
  // The client's own answers come back masqueraded (hairpin); every other backend must see its own IP.
  const fromOthers = spread.filter((r): r is Extract<ProbeResult, { ok: true }> => r.ok && r.seen.pod !== client.name);
  const clients = [...new Set(fromOthers.map((r) => r.seen.client))];
  add(
    'client IP',
    who,
    at(svc.main),
    fromOthers.length > 0 && clients.length === 1 && clients[0] === client.ip,
    fromOthers.length
      ? `${fromOthers.length} answers from other pods saw the client as ${clients.join(', ')}${clients.length === 1 && clients[0] === client.ip ? ' (its own IP: no SNAT)' : ` (expected ${client.ip})`}`
      : 'no other pod answered',
  );

  const [udp, nodes, nodePorts, affinity, refused, refusedUdp, hairpin] = await Promise.all([
    until(
      () => pod({ proto: 'udp', host: ip(svc.main), port: PORT, timeoutMs: 1000 }),
      (r) => r.ok,
    ),
    Promise.all(
      s.nodes.map((n) =>
        until(
          () => fromNode(n, ip(svc.main), PORT),
          (r) => r.ok,
        ),
      ),
    ),
    Promise.all(
      s.nodes.map(async (n) => {
        const cluster = await until(
          () => outside({ proto: 'tcp', host: n.ip, port: nodePortOf(svc.nodePort) }),
          (r) => r.ok,
        );
        const probe = () => outside({ proto: 'tcp', host: n.ip, port: nodePortOf(svc.local), timeoutMs: 1000 });
        // A node without a local endpoint drops (as kube-proxy does): nothing to wait for once its proxy has the other NodePort.
        return { cluster, local: local.some((b) => b.node === n.name) ? await until(probe, (r) => r.ok) : await probe() };
      }),
    ),
    until(
      () => pod({ proto: 'tcp', host: ip(svc.affinity), port: PORT }),
      (r) => r.ok,
    ).then(async (r) => (r.ok ? [r, ...(await many(11, copies({ proto: 'tcp', host: ip(svc.affinity), port: PORT })))] : [r])),
    until(
      () => pod({ proto: 'tcp', host: ip(svc.empty), port: PORT, timeoutMs: 1000 }),
      (r) => !r.ok && /ECONNREFUSED/.test(r.error),
    ),
    until(
      () => pod({ proto: 'udp', host: ip(svc.empty), port: PORT, timeoutMs: 1000 }),
      (r) => !r.ok && /ECONNREFUSED/.test(r.error),
    ),
    until(
      () => pod({ proto: 'tcp', host: ip(svc.hairpin), port: PORT }),
      (r) => r.ok,
    ),
  ]);

  // An answer from the client itself is hairpin (masqueraded); any other saw the client's own IP.
  add('udp', who, at(svc.main), udp.ok && (udp.seen.client === client.ip || udp.seen.pod === client.name), seen(udp));
  for (const [i, n] of s.nodes.entries()) {
    const r = nodes[i]!;
    add('node → ClusterIP', `${n.name} ${n.ip}`, at(svc.main), r.ok, seen(r));
  }
  for (const [i, n] of s.nodes.entries()) {
    const r = nodePorts[i]!.cluster;
    add('NodePort', `outside ${s.outside.gateway}`, `${n.name} ${n.ip}:${nodePortOf(svc.nodePort)}`, r.ok, seen(r));
  }
  for (const [i, n] of s.nodes.entries()) {
    const r = nodePorts[i]!.local;
    const here = local.filter((b) => b.node === n.name).map((b) => b.name);
    const to = `${n.name} ${n.ip}:${nodePortOf(svc.local)}`;
    if (here.length === 0) {
      add(
        'ETP Local',
        `outside ${s.outside.gateway}`,
        to,
        !r.ok,
        r.ok ? `${seen(r)}, but ${n.name} has no local endpoint and should drop` : `no answer: ${n.name} has no local endpoint and drops, as kube-proxy does`,
      );
      continue;
    }
    const ok = r.ok && here.includes(r.seen.pod) && r.seen.client === s.outside.gateway;
    add(
      'ETP Local',
      `outside ${s.outside.gateway}`,
      to,
      ok,
      r.ok ? `${seen(r)}${ok ? ` (a pod on ${n.name}, client IP kept)` : ` (expected one of ${here.join(', ')} seeing ${s.outside.gateway})`}` : r.error,
    );
  }
  const sticky = tally(affinity);
  const one = affinity.every((r) => r.ok) && sticky.size === 1;
  add(
    'affinity',
    who,
    at(svc.affinity),
    one,
    one
      ? `${affinity.length} connections all reached ${[...sticky.keys()][0]} (ClientIP, timeout ${AFFINITY_TIMEOUT_S} s${backends.length > 1 ? `, ${backends.length} backends` : '; one backend only, so stickiness is not shown'})`
      : `connections spread over ${[...sticky].map(([n, c]) => `${n}×${c}`).join(' ') || 'nothing'}${affinity.some((r) => !r.ok) ? ` and ${affinity.filter((r) => !r.ok).length} failed` : ''}`,
  );
  for (const [proto, r, how] of [
    ['tcp', refused, 'TCP reset'],
    ['udp', refusedUdp, 'ICMP port unreachable'],
  ] as const) {
    const ok = !r.ok && /ECONNREFUSED/.test(r.error) && r.ms < REFUSED_WITHIN_MS;
    add(
      `no endpoints ${proto}`,
      who,
      at(svc.empty),
      ok,
      r.ok
        ? `${r.seen.pod} answered, but the Service selects no pod`
        : ok
          ? `refused in ${r.ms.toFixed(1)} ms (${how})`
          : `${r.error} after ${r.ms.toFixed(0)} ms (expected a refusal within ${REFUSED_WITHIN_MS} ms)`,
    );
  }
  const self = hairpin.ok && hairpin.seen.pod === client.name;
  add(
    'hairpin',
    who,
    at(svc.hairpin),
    self,
    hairpin.ok
      ? `${client.name} reached itself through its Service and saw the client as ${hairpin.seen.client}${self ? ' (masqueraded, so the reply comes back)' : ''}`
      : hairpin.error,
  );
  return out;
}
