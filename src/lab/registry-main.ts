import { createInterface } from 'node:readline';
import { contains, parseAddr, parseCidr } from '../ip/cidr.js';
import { endpointsOf } from '../service/endpoints.js';
import { DEFAULT_REGISTRY_PREFIX, Registry } from '../service/registry.js';
import { serviceKey, type Service } from '../service/types.js';
import { EtcdStore } from '../store/etcd.js';
import { retrying } from '../store/retry.js';
import { docId, type RegistryReply, type RegistryRequest, type RegistryView } from './registry.js';

/**
 * The process behind registry.ts's registryCall, in etcd's namespace: one JSON request on stdin, one
 * JSON reply on stdout (a list of requests: served in order, a list of replies). With `--watch` (registryWatch) it prints the view as a JSON line at start and
 * after every change, until its stdin closes (its parent went away); with `--session` it serves a
 * list of requests per line until then.
 */
async function view(registry: Registry, network: EtcdStore): Promise<RegistryView> {
  const snap = await registry.snapshot();
  // flannel's lease keys: subnets/10.244.3.0-24.
  const subnets = (await network.list('subnets/')).items.map((kv) => parseCidr(kv.key.slice('subnets/'.length).replace('-', '/')));
  const live = (ip: string) => subnets.some((c) => contains(c, parseAddr(ip)));
  const pods = [...snap.pods.values()];
  const slices = [...snap.slices.values()];
  const services = [...snap.services.values()];
  const endpoints = Object.fromEntries(services.map((svc) => [serviceKey(svc), endpointsOf(svc, { pods, slices }, live)]));
  return { services, pods, slices, endpoints };
}

/**
 * Per request: `lab up` applies a pod spec for every pod of the lab in one call (1,000 at 100x10) while
 * every agent watches the registry, and a busy etcd took more than the default 5 s for one of them.
 */
const REQUEST_TIMEOUT_MS = 15_000;

async function serve(endpoint: string, req: RegistryRequest): Promise<RegistryReply> {
  const store = new EtcdStore({ endpoints: endpoint.split(','), prefix: DEFAULT_REGISTRY_PREFIX, timeoutMs: REQUEST_TIMEOUT_MS });
  const network = new EtcdStore({ endpoints: endpoint.split(','), prefix: '/coreos.com/network', timeoutMs: REQUEST_TIMEOUT_MS });
  const registry = new Registry(store);
  try {
    if (req.op === 'view') return { op: 'view', ...(await view(registry, network)) };
    if (req.op === 'apply') {
      const results = await registry.applyManifests(req.docs);
      const services = await Promise.all(results.filter((r) => r.kind === 'Service').map((r) => registry.getService(r.namespace, r.name)));
      return { op: 'apply', results, services: services.filter((x): x is Service => x !== undefined) };
    }
    const results = await Promise.all(
      req.docs.map(async (m) => {
        const id = docId(m);
        const deleted =
          m.kind === 'Service'
            ? await registry.deleteService(id.namespace, id.name)
            : m.kind === 'EndpointSlice'
              ? await registry.deleteSlice(id.namespace, id.name)
              : await registry.deletePod(id.namespace, id.name);
        return { ...id, deleted };
      }),
    );
    return { op: 'delete', results };
  } finally {
    await Promise.all([store.close(), network.close()]).catch(() => undefined);
  }
}

async function watch(endpoint: string): Promise<void> {
  const store = new EtcdStore({ endpoints: endpoint.split(','), prefix: DEFAULT_REGISTRY_PREFIX });
  const network = new EtcdStore({ endpoints: endpoint.split(','), prefix: '/coreos.com/network' });
  const registry = new Registry(store);
  let last = '';
  let timer: NodeJS.Timeout | undefined;
  const print = async () => {
    const line = JSON.stringify(await view(registry, network));
    if (line !== last) process.stdout.write(`${line}\n`);
    last = line;
  };
  const fail = (e: Error) => {
    console.error(e.message);
    process.exit(1);
  };
  // A burst of writes (an apply of many documents) becomes one view.
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(() => void print().catch(fail), 50);
  };
  await store.watch('', 0, changed, fail);
  await network.watch('subnets/', 0, changed, fail);
  await print();
  process.stdin.on('end', () => process.exit(0)).resume();
}

/** Every request is declarative (apply, delete, view), so asking again after a timeout is safe. */
const once = (endpoint: string, r: RegistryRequest) =>
  retrying(() => serve(endpoint, r), { onRetry: (e, n) => console.error(`attempt ${n}: ${e.message}; trying again`) });

/** `--session` (registry.ts registrySession): a list of requests per line on stdin, the list of their replies (or the error) per line on stdout. */
async function session(endpoint: string): Promise<void> {
  for await (const line of createInterface({ input: process.stdin })) {
    try {
      const replies = [];
      for (const r of JSON.parse(line) as RegistryRequest[]) replies.push(await once(endpoint, r));
      process.stdout.write(`${JSON.stringify(replies)}\n`);
    } catch (e) {
      process.stdout.write(`${JSON.stringify({ error: (e as Error).message })}\n`);
    }
  }
}

async function main(): Promise<void> {
  const endpoint = process.argv[2];
  if (!endpoint) {
    console.error('usage: registry-main.js ETCD_ENDPOINTS [--watch | --session] < request.json');
    process.exit(2);
  }
  if (process.argv[3] === '--watch') return watch(endpoint);
  if (process.argv[3] === '--session') return session(endpoint);
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  try {
    const req = JSON.parse(text) as RegistryRequest | RegistryRequest[];
    if (!Array.isArray(req)) process.stdout.write(JSON.stringify(await once(endpoint, req)));
    else {
      const replies = [];
      for (const r of req) replies.push(await once(endpoint, r));
      process.stdout.write(JSON.stringify(replies));
    }
  } catch (e) {
    console.error((e as Error).message);
    process.exitCode = 1;
  }
}

await main();
