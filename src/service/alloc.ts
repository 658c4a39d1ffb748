import { isIPv4 } from 'node:net';
import type { Store } from '../store/store.js';
import { createEach, readEach } from './batch.js';
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

/** Rounds of random picks before a picker lists what is taken (the range is nearly full). */
const ROUNDS = 16;

/**
 * Takes free ClusterIPs at random, in batches: read which candidates are taken, create the free ones
 * in transactions, pick again for the few that lost. A few store requests per 100 Services whatever
 * the number of Services; only a nearly full range makes it list the taken addresses.
 */
export class ClusterIpPicker {
  private readonly taken = new Set<string>();
  private listed = false;

  constructor(
    private readonly store: Store,
    private readonly cidr: ServiceCidr,
    private readonly avoid: Set<string>,
  ) {}

  /** One address per owner; each one taken is also recorded in `taken` at once, so a failure halfway can free them. */
  async allocate(owners: string[], taken: { key: string; owner: string }[] = []): Promise<string[]> {
    const out = new Array<string>(owners.length);
    let pending = owners.map((_, i) => i);
    for (let round = 1; pending.length > 0; round++) {
      if (round > ROUNDS) await this.listTaken();
      const ips = pending.map(() => this.candidate());
      const found = await readEach(this.store, ips.map(clusterIpKey));
      const free = pending.map((i, j) => ({ i, ip: ips[j]! })).filter((_, j) => found[j] === undefined);
      const created = await createEach(
        this.store,
        free.map((f) => ({ key: clusterIpKey(f.ip), value: owners[f.i]! })),
      );
      for (const [j, f] of free.entries()) {
        if (!created[j]) continue;
        out[f.i] = f.ip;
        taken.push({ key: clusterIpKey(f.ip), owner: owners[f.i]! });
      }
      pending = pending.filter((i) => out[i] === undefined);
    }
    return out;
  }

  private async listTaken(): Promise<void> {
    if (this.listed) return;
    this.listed = true;
    for (const kv of (await this.store.list(CLUSTER_IP_PREFIX)).items) this.taken.add(kv.key.slice(CLUSTER_IP_PREFIX.length));
  }

  /** A random address not known to be taken (marked taken now), or an error when none is left. */
  private candidate(): string {
    if (this.taken.size + this.avoid.size < this.cidr.size) {
      for (let i = 0; i < 256; i++) {
        const ip = this.cidr.random();
        if (this.taken.has(ip) || this.avoid.has(ip)) continue;
        this.taken.add(ip);
        return ip;
      }
    }
    throw new Error(`no free ClusterIP left in ${this.cidr.text}; delete Services you no longer need`);
  }
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
