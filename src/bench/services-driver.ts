import { request } from 'node:http';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import type { Manifest } from '../service/manifest.js';
import type { Registry } from '../service/registry.js';

/**
 * The halves of `weft bench services` that must run inside the lab: etcd answers only there, and
 * connections to a ClusterIP only mean something from a pod. One process per role, started once and
 * kept for the whole run (no start-up in any timing), taking one JSON request per line on stdin and
 * answering with JSON lines that carry the request's id; the last one has `done: true`.
 *
 *   writer ENDPOINT  (etcd's namespace): Services and their EndpointSlices through the Registry
 *   client           (a pod's namespace): connect times, and watching for a change to reach its node
 *
 * Times are process.hrtime (CLOCK_MONOTONIC, the same clock in every process of the machine), in ns
 * as strings, so the bench can subtract a writer's start from a client's first success.
 */
export interface ServiceSpec {
  name: string;
  ip: string;
  port: number;
  /** The backends: pod IP and the node the pod runs on. */
  endpoints: { ip: string; node: string }[];
}

export type Request =
  | { op: 'taken' }
  | { op: 'write'; services: ServiceSpec[]; chunk: number }
  | { op: 'connect'; targets: { host: string; port: number }[]; count: number; warmup: number }
  | { op: 'watch'; host: string; port: number; want?: string; intervalMs: number; timeoutMs: number };

export type Reply =
  | { done: true; ips: string[] }
  | { done: true; startNs: string; endNs: string }
  | { done: true; samples: number[][]; failures: number }
  | { done: true; atNs: string; tries: number }
  | { done: true; error: string }
  | { done?: false; progress: string }
  | { done?: false; armed: true };

export const NAMESPACE = 'bench';
const now = () => process.hrtime.bigint();

/** The Kubernetes documents for one Service: the Service (no selector) and its one EndpointSlice. */
export function serviceDocs(s: ServiceSpec): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: NAMESPACE },
      spec: { type: 'ClusterIP', clusterIP: s.ip, ports: [{ protocol: 'TCP', port: s.port, targetPort: s.port }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-1`, namespace: NAMESPACE, labels: { 'kubernetes.io/service-name': s.name } },
      addressType: 'IPv4',
      ports: [{ name: '', protocol: 'TCP', port: s.port }],
      endpoints: s.endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, nodeName: e.node })),
    },
  ];
}

/**
 * The documents checked as `weft service apply` checks them, without the YAML parser: at 30,000
 * Services parsing text would cost more than writing to etcd.
 */
async function manifests(services: ServiceSpec[]): Promise<Manifest[]> {
  const { Checker, checkEndpointSlice, checkService } = await import('../service/validate.js');
  return services.flatMap((x) => {
    const [service, slice] = serviceDocs(x) as [Record<string, unknown>, Record<string, unknown>];
    const c = new Checker();
    const out: Manifest[] = [
      { kind: 'Service', service: checkService(c, service)! },
      { kind: 'EndpointSlice', slice: checkEndpointSlice(c, slice)! },
    ];
    if (c.issues.length > 0) throw new Error(`Service ${x.name}: ${c.issues.map((i) => `${i.path} ${i.message}`).join('; ')}`);
    return out;
  });
}

async function write(registry: Registry, services: ServiceSpec[], chunk: number, say: (r: Reply) => void): Promise<Reply> {
  const docs = await manifests(services);
  const startNs = now();
  for (let i = 0; i < docs.length; i += 2 * chunk) {
    await registry.applyManifests(docs.slice(i, i + 2 * chunk));
    if (services.length > chunk) say({ progress: `${Math.min(i / 2 + chunk, services.length)} of ${services.length} Services written` });
  }
  return { done: true, startNs: String(startNs), endNs: String(now()) };
}

/** One TCP connect: ms from connect() to the handshake done, then a reset (no TIME_WAIT left behind); NaN on failure. */
function connectMs(host: string, port: number): Promise<number> {
  return new Promise((resolve) => {
    const t0 = now();
    const sock = connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(NaN);
    }, 2000);
    sock.once('connect', () => {
      const ms = Number(now() - t0) / 1e6;
      clearTimeout(timer);
      sock.resetAndDestroy();
      resolve(ms);
    });
    sock.once('error', () => {
      clearTimeout(timer);
      resolve(NaN);
    });
  });
}

/** `count` rounds of one connect to each target in turn, so that every target sees the same moments of load. */
async function connects(targets: { host: string; port: number }[], count: number, warmup: number): Promise<Reply> {
  const samples: number[][] = targets.map(() => []);
  let failures = 0;
  for (let i = 0; i < warmup + count; i++) {
    for (const [j, t] of targets.entries()) {
      const ms = await connectMs(t.host, t.port);
      if (Number.isNaN(ms)) failures++;
      else if (i >= warmup) samples[j]!.push(ms);
    }
  }
  return { done: true, samples, failures };
}

/** The pod that answered an HTTP GET (the lab's workload says who it is), or undefined. */
function answeredBy(host: string, port: number, timeoutMs: number, onRequest: (cancel: () => void) => void): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        try {
          resolve((JSON.parse(body) as { pod?: string }).pod);
        } catch {
          resolve(undefined);
        }
      });
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
    onRequest(() => req.destroy());
  });
}

/**
 * Starts a GET to host:port every `intervalMs`, each independent of the others (a SYN to an address
 * the node does not route yet only times out), until one is answered by `want` (any pod when absent).
 * The answer is that request's start: the change was in this node's kernel by then, within one interval.
 */
function watch(host: string, port: number, want: string | undefined, intervalMs: number, timeoutMs: number, say: (r: Reply) => void): Promise<Reply> {
  return new Promise((resolve) => {
    const inFlight = new Set<() => void>();
    let tries = 0;
    const finish = (r: Reply) => {
      clearInterval(ticker);
      clearTimeout(deadline);
      for (const cancel of inFlight) cancel();
      resolve(r);
    };
    const fire = () => {
      const t0 = now();
      tries++;
      let cancel = () => undefined as void;
      void answeredBy(host, port, 1000, (c) => {
        cancel = c;
        inFlight.add(c);
      }).then((pod) => {
        inFlight.delete(cancel);
        if (pod !== undefined && (want === undefined || pod === want)) finish({ done: true, atNs: String(t0), tries });
      });
    };
    const ticker = setInterval(fire, intervalMs);
    const deadline = setTimeout(
      () => finish({ done: true, error: `no answer${want ? ` from ${want}` : ''} at ${host}:${port} within ${timeoutMs} ms` }),
      timeoutMs,
    );
    fire();
    say({ armed: true });
  });
}

function serve(handle: (r: Request, say: (x: Reply) => void) => Promise<Reply>): void {
  const out = (id: number, r: Reply) => process.stdout.write(`${JSON.stringify({ id, ...r })}\n`);
  createInterface({ input: process.stdin }).on('line', (line) => {
    const { id, ...req } = JSON.parse(line) as Request & { id: number };
    handle(req, (x) => out(id, x)).then(
      (r) => out(id, r),
      (e: Error) => out(id, { done: true, error: e.message }),
    );
  });
}

const [role, endpoint] = process.argv.slice(2);
if (role === 'writer' && endpoint) {
  // Loaded here: the clients, one in each of two pods, need none of it.
  const [{ DEFAULT_REGISTRY_PREFIX, Registry }, { EtcdStore }] = await Promise.all([import('../service/registry.js'), import('../store/etcd.js')]);
  const registry = new Registry(new EtcdStore({ endpoints: endpoint.split(','), prefix: DEFAULT_REGISTRY_PREFIX }));
  serve(async (r, say) => {
    if (r.op === 'taken') return { done: true, ips: (await registry.listServices()).flatMap((s) => (s.clusterIP ? [s.clusterIP] : [])) };
    if (r.op === 'write') return write(registry, r.services, r.chunk, say);
    throw new Error(`the writer does not do ${r.op}`);
  });
} else if (role === 'client') {
  serve(async (r, say) => {
    if (r.op === 'connect') return connects(r.targets, r.count, r.warmup);
    if (r.op === 'watch') return watch(r.host, r.port, r.want, r.intervalMs, r.timeoutMs, say);
    throw new Error(`the client does not do ${r.op}`);
  });
} else {
  process.stderr.write('usage: services-driver.js writer ETCD_ENDPOINT | client\n');
  process.exit(2);
}
