import { request } from 'node:http';
import { Socket } from 'node:net';
import { inetSocket } from '../kernel/inet.js';
import { netnsPath } from '../kernel/netns.js';
import { etcdEndpoints, type LabState } from './state.js';

/**
 * The lab's own view of its etcd, over etcd's JSON gateway from a socket made inside the first
 * member's namespace (only the lab's namespaces reach etcd). Independent of the agents, so that
 * verify can tell what the store holds from what the agents say, and a rollback can drop a lease
 * whose agent never told anyone.
 */
const NETWORK_PREFIX = '/coreos.com/network/';
const SUBNETS = `${NETWORK_PREFIX}subnets/`;
const CALL_TIMEOUT_MS = 3000;

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

/** One HTTP request to `endpoint` on a TCP socket of namespace `ns`: the answer's body, whatever its status (etcd's errors are JSON too). */
function httpIn(ns: string, endpoint: string, path: string, body?: unknown): Promise<string> {
  const { hostname, port } = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const sock = new Socket({ fd: inetSocket(netnsPath(ns), 'tcp'), readable: true, writable: true });
    const req = request(
      { method: body === undefined ? 'GET' : 'POST', host: hostname, port, path, createConnection: () => sock.connect(Number(port), hostname) },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve(text));
      },
    );
    const timer = setTimeout(() => req.destroy(new Error(`no answer in ${CALL_TIMEOUT_MS / 1000} s`)), CALL_TIMEOUT_MS);
    req.on('close', () => clearTimeout(timer));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** One JSON request to the first member that answers (a dead member's namespace refuses at once). */
async function call(s: LabState, path: string, body?: unknown): Promise<unknown> {
  const failures: string[] = [];
  for (const endpoint of etcdEndpoints(s)) {
    let text: string;
    try {
      text = await httpIn(s.etcd.ns, endpoint, path, body);
    } catch (e) {
      failures.push(`etcd at ${endpoint} did not answer: ${(e as Error).message}`);
      continue;
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      failures.push(`etcd at ${endpoint} gave no JSON: ${text.slice(0, 120)}`);
    }
  }
  throw new Error(failures.join('; '));
}

/**
 * flannel's network config (`weft network init` would write the same key), written only if absent
 * and read back if not: from here, as the rest of this file, because a `weft network init` process
 * would load Node and Weft's modules (a fifth of a second) while every agent waits for this key.
 */
export async function putNetworkConfig(s: LabState, config: string): Promise<void> {
  const key = b64(`${NETWORK_PREFIX}config`);
  const r = (await call(s, '/v3/kv/txn', {
    compare: [{ key, target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
    success: [{ request_put: { key, value: b64(config) } }],
    failure: [{ request_range: { key } }],
  })) as { succeeded?: boolean; responses?: { response_range?: { kvs?: { value: string }[] } }[] };
  if (r.succeeded) return;
  const held = r.responses?.[0]?.response_range?.kvs?.[0]?.value;
  if (held === undefined || unb64(held) !== config)
    throw new Error(`${NETWORK_PREFIX}config holds ${held === undefined ? 'nothing readable' : unb64(held)}, not ${config}`);
}

/** etcd's own health endpoint. */
export async function etcdHealthy(s: LabState): Promise<boolean> {
  const r = (await call(s, '/health')) as { health?: string };
  return r.health === 'true';
}

export interface StoredLease {
  key: string;
  subnet: string;
  publicIP?: string;
}

/** Every subnet lease in etcd (flannel's keys: subnets/10.244.3.0-24 with {"PublicIP": ...}). */
export async function storedLeases(s: LabState): Promise<StoredLease[]> {
  const r = (await call(s, '/v3/kv/range', { key: b64(SUBNETS), range_end: b64(SUBNETS.replace(/\/$/, '0')) })) as { kvs?: { key: string; value: string }[] };
  return (r.kvs ?? []).map((kv) => {
    const key = unb64(kv.key);
    let publicIP: string | undefined;
    try {
      publicIP = (JSON.parse(unb64(kv.value)) as { PublicIP?: string }).PublicIP;
    } catch {
      publicIP = undefined;
    }
    return { key, subnet: key.slice(SUBNETS.length).replace('-', '/'), ...(publicIP ? { publicIP } : {}) };
  });
}

/** Deletes every lease that carries `publicIP` (a node's IP is unique in its lab); returns their keys. */
export async function dropLeasesOf(s: LabState, publicIP: string): Promise<string[]> {
  const mine = (await storedLeases(s)).filter((l) => l.publicIP === publicIP);
  for (const l of mine) await call(s, '/v3/kv/deleterange', { key: b64(l.key) });
  return mine.map((l) => l.key);
}
