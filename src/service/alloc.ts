import { isIPv4 } from 'node:net';
import type { Store } from '../store/store.js';
import { intToIp, ipToInt } from './endpoints.js';

/**
 * ClusterIP and NodePort allocation. Each allocated address or port is a key of its own in the
 * store (`alloc/clusterip/<ip>`, `alloc/nodeport/<port>`) holding its owner (`ns/name`), taken with
 * a create-if-absent so two writers never get the same one. A ClusterIP is picked at random in the
 * service CIDR (a few store calls whatever the number of Services); NodePorts, at most 2,768 of
 * them, from a listing of the taken ones.
 */
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';
export const NODE_PORT_RANGE = { min: 30_000, max: 32_767 } as const;
export const CLUSTER_IP_PREFIX = 'alloc/clusterip/';
export const NODE_PORT_PREFIX = 'alloc/nodeport/';

export const clusterIpKey = (ip: string) => `${CLUSTER_IP_PREFIX}${ip}`;
export const nodePortKey = (port: number) => `${NODE_PORT_PREFIX}${port}`;

/** An IPv4 service CIDR; its network and broadcast addresses are never handed out. */
export class ServiceCidr {
  readonly text: string;
  private readonly first: number;
  private readonly last: number;

  constructor(text: string) {
    const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(text);
    const prefix = Number(m?.[2]);
    if (!m || !isIPv4(m[1]!) || prefix < 8 || prefix > 30)
      throw new Error(`service CIDR "${text}" must be an IPv4 prefix from /8 to /30, e.g. ${DEFAULT_SERVICE_CIDR}`);
    const size = 2 ** (32 - prefix);
    const base = ipToInt(m[1]!) - (ipToInt(m[1]!) % size);
    this.text = `${intToIp(base)}/${prefix}`;
    this.first = base + 1;
    this.last = base + size - 2;
  }

  /** Why `ip` cannot be a ClusterIP here, or undefined when it can. */
  refuse(ip: string): string | undefined {
    const n = ipToInt(ip);
    if (n === this.first - 1 || n === this.last + 1) return `${ip} is the service range ${this.text}'s ${n < this.first ? 'network' : 'broadcast'} address`;
    if (n < this.first || n > this.last) return `${ip} is outside the service range ${this.text}`;
    return undefined;
  }

  random(): string {
    return intToIp(this.first + Math.floor(Math.random() * (this.last - this.first + 1)));
  }

  get size(): number {
    return this.last - this.first + 1;
  }
}

export type Reservation = { result: 'new' } | { result: 'held' } | { result: 'taken'; by: string };

/** Takes `key` for `owner`: `new` when this call took it, `held` when the owner already had it, else who has it. */
export async function reserve(store: Store, key: string, owner: string): Promise<Reservation> {
  for (;;) {
    if ((await store.createIfAbsent(key, owner)) !== false) return { result: 'new' };
    const kv = await store.get(key);
    if (kv === undefined) continue;
    return kv.value === owner ? { result: 'held' } : { result: 'taken', by: kv.value };
  }
}

/** Frees `key` if `owner` holds it. */
export function release(store: Store, key: string, owner: string): Promise<boolean> {
  return store.deleteIfValue(key, owner);
}

const RANDOM_TRIES = 64;

/** A free ClusterIP taken for `owner`, avoiding `avoid` (addresses others in the same batch asked for). */
export async function allocateClusterIp(store: Store, cidr: ServiceCidr, owner: string, avoid: Set<string>): Promise<string> {
  for (let i = 0; i < RANDOM_TRIES; i++) {
    const ip = cidr.random();
    if (avoid.has(ip)) continue;
    if ((await store.createIfAbsent(clusterIpKey(ip), owner)) !== false) return ip;
  }
  // The range is nearly full: look for the holes.
  const taken = new Set((await store.list(CLUSTER_IP_PREFIX)).items.map((kv) => kv.key.slice(CLUSTER_IP_PREFIX.length)));
  for (let i = 0; i < cidr.size; i++) {
    const ip = cidr.random();
    if (taken.has(ip) || avoid.has(ip)) continue;
    if ((await store.createIfAbsent(clusterIpKey(ip), owner)) !== false) return ip;
    taken.add(ip);
  }
  throw new Error(`no free ClusterIP left in ${cidr.text}; delete Services you no longer need`);
}

/** Picks free NodePorts from one listing of the taken ones; create-if-absent settles races with other writers. */
export class NodePortPicker {
  private taken: Set<number> | undefined;

  constructor(
    private readonly store: Store,
    private readonly avoid: Set<number>,
  ) {}

  async allocate(owner: string): Promise<number> {
    this.taken ??= new Set((await this.store.list(NODE_PORT_PREFIX)).items.map((kv) => Number(kv.key.slice(NODE_PORT_PREFIX.length))));
    const free: number[] = [];
    for (let p = NODE_PORT_RANGE.min; p <= NODE_PORT_RANGE.max; p++) if (!this.taken.has(p) && !this.avoid.has(p)) free.push(p);
    while (free.length > 0) {
      const [port] = free.splice(Math.floor(Math.random() * free.length), 1) as [number];
      this.taken.add(port);
      if ((await this.store.createIfAbsent(nodePortKey(port), owner)) !== false) return port;
    }
    throw new Error(`no free nodePort left in ${NODE_PORT_RANGE.min}-${NODE_PORT_RANGE.max}; delete NodePort Services you no longer need`);
  }
}
