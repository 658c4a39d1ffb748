import { randomInt } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { formatAddr, formatNetwork, lastAddr, nthSubnet, overlaps, parseCidr, type Cidr } from '../ip/cidr.js';
import { StoreError, type Listing, type Store, type WatchEvent, type WatchHandle } from '../store/store.js';
import { parseNetworkConfig, type NetworkConfig } from './config.js';

/** What a node publishes about itself in its lease (flannel's LeaseAttrs). */
export interface LeaseAttrs {
  publicIP: string;
  /** flannel's udp backend leaves this out; vxlan and host-gw set it. */
  backendType?: string;
  /** Backend-specific JSON, e.g. {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"} for vxlan. */
  backendData?: unknown;
}

export interface Lease {
  subnet: Cidr;
  attrs: LeaseAttrs;
}

export type LeaseEvent =
  /** Another node's lease appeared or changed. */
  | { type: 'added'; lease: Lease }
  /** Another node's lease was deleted or expired; `lease` is what it last said. */
  | { type: 'removed'; lease: Lease }
  /** This node's lease was renewed. */
  | { type: 'renewed'; lease: Lease }
  /**
   * This node's lease is gone: `deleted` (deleted or expired) or `taken` (now holds someone
   * else's data). Renewal stops; call acquire() again to get a subnet back.
   */
  | { type: 'lost'; lease: Lease; reason: 'deleted' | 'taken' }
  /** The store misbehaved; the manager keeps retrying on its own. */
  | { type: 'error'; error: Error };

export type LeaseErrorCode = 'no-network-config' | 'out-of-subnets' | 'lease-contention' | 'invalid-lease-options';

export class LeaseError extends Error {
  override name = 'LeaseError';
  readonly code: LeaseErrorCode;

  constructor(code: LeaseErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export const CONFIG_KEY = 'config';
export const SUBNETS_PREFIX = 'subnets/';
export const DEFAULT_LEASE_TTL_SECONDS = 24 * 3600;
export const DEFAULT_RENEW_MARGIN_SECONDS = 3600;
const ACQUIRE_ATTEMPTS = 10;
const WATCH_RETRY_MIN_MS = 100;
const WATCH_RETRY_MAX_MS = 5000;

/** flannel's key for a subnet: 10.244.3.0/24 → 10.244.3.0-24 (under `subnets/`). */
export function subnetKey(subnet: Cidr): string {
  return `${SUBNETS_PREFIX}${formatAddr({ family: 4, value: subnet.base })}-${subnet.prefix}`;
}

/** The subnet a key names, or undefined for anything that is not an IPv4 subnet key. */
export function parseSubnetKey(key: string): Cidr | undefined {
  const match = /^subnets\/(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(key);
  if (!match || !isIPv4(match[1]!)) return undefined;
  const prefix = Number(match[2]);
  if (prefix > 32) return undefined;
  const subnet = parseCidr(`${match[1]}/${prefix}`);
  return subnet.ip === subnet.base ? subnet : undefined;
}

/** The lease value exactly as flanneld writes it (field order and the null PublicIPv6 included). */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  return JSON.stringify({
    PublicIP: attrs.publicIP,
    PublicIPv6: null,
    ...(attrs.backendType !== undefined && { BackendType: attrs.backendType }),
    ...(attrs.backendData !== undefined && { BackendData: attrs.backendData }),
  });
}

export function decodeLeaseAttrs(text: string): LeaseAttrs | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { PublicIP, BackendType, BackendData } = value as Record<string, unknown>;
  if (typeof PublicIP !== 'string' || !isIPv4(PublicIP)) return undefined;
  if (BackendType !== undefined && typeof BackendType !== 'string') return undefined;
  return {
    publicIP: PublicIP,
    ...(BackendType !== undefined && { backendType: BackendType }),
    ...(BackendData !== undefined && { backendData: BackendData }),
  };
}

/** Reads and validates `<prefix>/config`. */
export async function readNetworkConfig(store: Store): Promise<NetworkConfig> {
  const kv = await store.get(CONFIG_KEY);
  if (!kv) {
    throw new LeaseError(
      'no-network-config',
      `no network config at "${CONFIG_KEY}" under the etcd prefix; write one first, e.g. ` +
        `etcdctl put <prefix>/config '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'`,
    );
  }
  return parseNetworkConfig(kv.value);
}

/** Whether a node may hold `subnet` under `config` (flannel's isSubnetConfigCompat). */
export function isLeasable(config: NetworkConfig, subnet: Cidr): boolean {
  return subnet.family === 4 && subnet.prefix === config.subnetLen && subnet.base >= config.subnetMin.base && subnet.base <= config.subnetMax.base;
}

/**
 * A subnet chosen uniformly at random among those in [SubnetMin, SubnetMax] that overlap none of
 * `taken` (which may have any prefix length, e.g. leases from an older config).
 */
export function pickFreeSubnet(config: NetworkConfig, taken: Cidr[]): Cidr {
  const shift = BigInt(32 - config.subnetLen);
  const base = config.network.base;
  const lo = (config.subnetMin.base - base) >> shift;
  const hi = (config.subnetMax.base - base) >> shift;
  const end = lastAddr(config.network);
  const intervals: [bigint, bigint][] = [];
  for (const t of taken) {
    const first = max(t.base, base);
    const last = min(lastAddr(t), end);
    if (first > last) continue;
    const a = max((first - base) >> shift, lo);
    const b = min((last - base) >> shift, hi);
    if (a <= b) intervals.push([a, b]);
  }
  intervals.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const merged: [bigint, bigint][] = [];
  for (const [a, b] of intervals) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1] + 1n) last[1] = max(last[1], b);
    else merged.push([a, b]);
  }
  const total = hi - lo + 1n;
  const free = merged.reduce((n, [a, b]) => n - (b - a + 1n), total);
  if (free === 0n) {
    throw new LeaseError(
      'out-of-subnets',
      `out of subnets: all ${total} /${config.subnetLen} subnets ` +
        `from ${formatNetwork(config.subnetMin)} to ${formatNetwork(config.subnetMax)} are leased; ` +
        `delete leases of nodes that are gone (keys under ${SUBNETS_PREFIX}) or widen Network, SubnetMin or SubnetMax`,
    );
  }
  let index = lo + BigInt(randomInt(Number(free)));
  for (const [a, b] of merged) {
    if (a > index) break;
    index += b - a + 1n;
  }
  return nthSubnet(config.network, config.subnetLen, index);
}

export interface LeaseManagerOptions {
  store: Store;
  config: NetworkConfig;
  /** This node's data; `publicIP` identifies the node, as in flannel. */
  attrs: LeaseAttrs;
  /** The subnet from an earlier subnet.env (host bits ignored), preferred when nobody holds it. */
  previousSubnet?: Cidr;
  ttlSeconds?: number;
  /** Renew this long before the lease would expire. */
  renewMarginSeconds?: number;
}

interface OwnLease {
  lease: Lease;
  key: string;
  value: string;
  /** Revision of our last write; older news about the key is stale. */
  revision: number;
}

interface RemoteLease {
  lease: Lease;
  value: string;
}

/**
 * Holds this node's subnet lease (acquire, renew, notice loss) and follows every other node's lease.
 * Listeners see remote leases only; this node's own lease shows up as `renewed` and `lost`.
 */
export class LeaseManager {
  private readonly store: Store;
  private readonly config: NetworkConfig;
  private readonly attrs: LeaseAttrs;
  private readonly value: string;
  private readonly previousSubnet: Cidr | undefined;
  private readonly ttlSeconds: number;
  private readonly renewDelayMs: number;
  private readonly renewRetryMs: number;
  private readonly listeners = new Set<(event: LeaseEvent) => void>();
  private own: OwnLease | undefined;
  private readonly remote = new Map<string, RemoteLease>();
  private renewTimer: NodeJS.Timeout | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private watchHandle: WatchHandle | undefined;
  private watchRetryMs = WATCH_RETRY_MIN_MS;
  private lastRevision = 0;
  private following = false;
  private stopped = false;

  constructor(options: LeaseManagerOptions) {
    const ttl = options.ttlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const margin = options.renewMarginSeconds ?? Math.min(DEFAULT_RENEW_MARGIN_SECONDS, ttl / 2);
    if (!Number.isInteger(ttl) || ttl < 1) {
      throw new LeaseError('invalid-lease-options', `lease TTL must be a whole number of seconds, at least 1 (got ${ttl})`);
    }
    if (!(margin > 0 && margin < ttl)) {
      throw new LeaseError('invalid-lease-options', `renew margin must be above 0 and below the lease TTL of ${ttl} s (got ${margin})`);
    }
    this.store = options.store;
    this.config = options.config;
    this.attrs = options.attrs;
    this.value = encodeLeaseAttrs(options.attrs);
    this.previousSubnet = options.previousSubnet && { ...options.previousSubnet, ip: options.previousSubnet.base };
    this.ttlSeconds = ttl;
    this.renewDelayMs = (ttl - margin) * 1000;
    // Several retries must fit in the margin, or one slow store hiccup would let the lease lapse.
    this.renewRetryMs = Math.min(60_000, (margin * 1000) / 4);
  }

  get ownLease(): Lease | undefined {
    return this.own?.lease;
  }

  remoteLeases(): Lease[] {
    return [...this.remote.values()].map((r) => r.lease);
  }

  on(listener: (event: LeaseEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Gets this node a subnet, in flannel's order of preference: the lease that already carries our
   * PublicIP, else the previous subnet if free, else a random free one. Then keeps renewing it.
   */
  async acquire(): Promise<Lease> {
    for (let attempt = 0; attempt < ACQUIRE_ATTEMPTS; attempt++) {
      const own = await this.tryAcquire(await this.store.list(SUBNETS_PREFIX));
      if (own) {
        this.setOwn(own);
        return own.lease;
      }
    }
    throw new LeaseError(
      'lease-contention',
      `gave up acquiring a subnet after losing ${ACQUIRE_ATTEMPTS} races to other nodes; retry, and check that no node is stuck writing leases`,
    );
  }

  /**
   * Lists every lease (emitting `added` for each remote one), then follows changes in the
   * background. Rejects only if that first list fails; later store failures are retried and
   * reported as `error` events, and a compacted history is handled by listing again.
   */
  async watch(): Promise<void> {
    if (this.following) return;
    const listing = await this.store.list(SUBNETS_PREFIX);
    this.following = true;
    this.applyListing(listing);
    await this.follow(listing.revision + 1);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.watchTimer);
    await this.watchHandle?.stop();
  }

  private async tryAcquire(listing: Listing): Promise<OwnLease | undefined> {
    const leases = listing.items.flatMap((kv) => {
      const subnet = parseSubnetKey(kv.key);
      return subnet ? [{ subnet, key: kv.key, value: kv.value, attrs: decodeLeaseAttrs(kv.value) }] : [];
    });
    const mine = leases.find((l) => l.attrs?.publicIP === this.attrs.publicIP);
    if (mine && isLeasable(this.config, mine.subnet)) {
      const revision = await this.store.replaceIfValue(mine.key, mine.value, this.value, this.ttlSeconds);
      return revision === false ? undefined : this.ownRecord(mine.subnet, revision);
    }
    if (mine) await this.store.delete(mine.key);
    // Keys whose value we cannot read still hold their subnet.
    const taken = leases.filter((l) => l !== mine).map((l) => l.subnet);
    const previous = this.previousSubnet;
    const candidate =
      previous && isLeasable(this.config, previous) && !taken.some((t) => overlaps(t, previous))
        ? previous
        : pickFreeSubnet(this.config, taken);
    const revision = await this.store.createIfAbsent(subnetKey(candidate), this.value, this.ttlSeconds);
    return revision === false ? undefined : this.ownRecord(candidate, revision);
  }

  private ownRecord(subnet: Cidr, revision: number): OwnLease {
    return { lease: { subnet, attrs: this.attrs }, key: subnetKey(subnet), value: this.value, revision };
  }

  private setOwn(own: OwnLease): void {
    this.own = own;
    this.scheduleRenewal(this.renewDelayMs);
    // The key may still be listed as the remote lease that held the subnet before it expired.
    this.dropRemote(own.key);
  }

  private scheduleRenewal(delayMs: number): void {
    clearTimeout(this.renewTimer);
    if (this.stopped) return;
    this.renewTimer = setTimeout(() => void this.renew(), delayMs);
  }

  private async renew(): Promise<void> {
    const own = this.own;
    if (!own || this.stopped) return;
    try {
      const revision = await this.store.replaceIfValue(own.key, own.value, own.value, this.ttlSeconds);
      if (this.own !== own) return;
      if (revision !== false) {
        own.revision = Math.max(own.revision, revision);
        this.scheduleRenewal(this.renewDelayMs);
        this.emit({ type: 'renewed', lease: own.lease });
        return;
      }
      const current = await this.store.get(own.key);
      if (this.own === own) this.lose(own, current ? 'taken' : 'deleted');
    } catch (err) {
      if (this.own !== own) return;
      this.scheduleRenewal(this.renewRetryMs);
      this.emit({ type: 'error', error: err as Error });
    }
  }

  private lose(own: OwnLease, reason: 'deleted' | 'taken'): void {
    if (this.own !== own) return;
    this.own = undefined;
    clearTimeout(this.renewTimer);
    this.emit({ type: 'lost', lease: own.lease, reason });
  }

  private async follow(fromRevision: number): Promise<void> {
    if (this.stopped) return;
    try {
      const handle = await this.store.watch(
        SUBNETS_PREFIX,
        fromRevision,
        (event) => this.applyEvent(event),
        (err) => this.onWatchError(err),
      );
      if (this.stopped) {
        await handle.stop();
        return;
      }
      this.watchHandle = handle;
      this.watchRetryMs = WATCH_RETRY_MIN_MS;
    } catch (err) {
      this.onWatchError(err as Error);
    }
  }

  private onWatchError(err: Error): void {
    if (this.stopped) return;
    this.watchHandle = undefined;
    if (err instanceof StoreError && err.code === 'compacted') {
      void this.relist();
      return;
    }
    this.emit({ type: 'error', error: err });
    this.retryLater(() => void this.follow(this.lastRevision + 1));
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    try {
      const listing = await this.store.list(SUBNETS_PREFIX);
      this.applyListing(listing);
      await this.follow(listing.revision + 1);
    } catch (err) {
      this.emit({ type: 'error', error: err as Error });
      this.retryLater(() => void this.relist());
    }
  }

  private retryLater(fn: () => void): void {
    clearTimeout(this.watchTimer);
    this.watchTimer = setTimeout(fn, this.watchRetryMs);
    this.watchRetryMs = Math.min(this.watchRetryMs * 2, WATCH_RETRY_MAX_MS);
  }

  private applyListing(listing: Listing): void {
    this.lastRevision = Math.max(this.lastRevision, listing.revision);
    const seen = new Set<string>();
    for (const kv of listing.items) {
      seen.add(kv.key);
      this.applyPut(kv.key, kv.value, listing.revision);
    }
    for (const key of [...this.remote.keys()]) {
      if (!seen.has(key)) this.dropRemote(key);
    }
    const own = this.own;
    if (own && listing.revision > own.revision && !seen.has(own.key)) this.lose(own, 'deleted');
  }

  private applyEvent(event: WatchEvent): void {
    this.lastRevision = Math.max(this.lastRevision, event.revision);
    if (event.type === 'put') {
      this.applyPut(event.key, event.value, event.revision);
      return;
    }
    const own = this.own;
    if (own && event.key === own.key && event.revision > own.revision) this.lose(own, 'deleted');
    this.dropRemote(event.key);
  }

  private applyPut(key: string, value: string, revision: number): void {
    const subnet = parseSubnetKey(key);
    if (!subnet) return;
    const own = this.own;
    if (own && key === own.key && revision > own.revision && value !== own.value) this.lose(own, 'taken');
    const attrs = decodeLeaseAttrs(value);
    if (!attrs || attrs.publicIP === this.attrs.publicIP || key === this.own?.key) {
      this.dropRemote(key);
      return;
    }
    if (this.remote.get(key)?.value === value) return;
    const lease = { subnet, attrs };
    this.remote.set(key, { lease, value });
    this.emit({ type: 'added', lease });
  }

  private dropRemote(key: string): void {
    const gone = this.remote.get(key);
    if (!gone) return;
    this.remote.delete(key);
    this.emit({ type: 'removed', lease: gone.lease });
  }

  private emit(event: LeaseEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);
const min = (a: bigint, b: bigint): bigint => (a < b ? a : b);
