import { StoreError, type Listing, type Store, type WatchEvent, type WatchHandle } from '../store/store.js';
import { chooseLease } from './allocate.js';
import type { NetworkConfig } from './config.js';
import { decodeLeaseAttrs, encodeLeaseAttrs, LeaseError, parseSubnetKey, subnetKey, SUBNETS_PREFIX, type Lease, type LeaseAttrs } from './lease.js';
import type { Cidr } from '../ip/cidr.js';

export const DEFAULT_LEASE_TTL_SECONDS = 24 * 3600;
export const DEFAULT_RENEW_MARGIN_SECONDS = 3600;
/** After the store lost its data, how long remote leases are kept while their nodes write them back. */
export const DEFAULT_RESET_GRACE_SECONDS = 60;
const ACQUIRE_ATTEMPTS = 10;
const WATCH_RETRY_MIN_MS = 100;
const WATCH_RETRY_MAX_MS = 5000;

export type LeaseEvent =
  /** Another node's lease appeared or changed. */
  | { type: 'added'; lease: Lease }
  /** Another node's lease was deleted or expired; `lease` is what it last said. */
  | { type: 'removed'; lease: Lease }
  /** This node's lease was renewed. */
  | { type: 'renewed'; lease: Lease }
  /**
   * This node's lease had gone from the store (deleted by someone, expired while the store was out
   * of reach, or the store lost its data) and the manager wrote the same subnet back.
   */
  | { type: 'reasserted'; lease: Lease; why: 'deleted' | 'reset' }
  /** This node's lease now holds another node's data: the subnet is no longer ours. Renewal stops. */
  | { type: 'lost'; lease: Lease; reason: 'taken' }
  /** The store lost its data or is another cluster (revision went back, or the cluster ID changed). */
  | { type: 'reset'; reason: string }
  /** The store misbehaved; the manager keeps retrying on its own. */
  | { type: 'error'; error: Error };

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
  /** After a store reset, keep remote leases not yet written back this long. */
  resetGraceSeconds?: number;
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
 * Holds this node's subnet lease (acquire, renew, write it back when it goes missing, notice when
 * another node takes it) and follows every other node's lease. Listeners see remote leases only;
 * this node's own lease shows up as `renewed`, `reasserted` and `lost`.
 *
 * The store can lose its data (etcd restored from nothing, or replaced by a new cluster). A
 * watch would then wait for revisions the new store reaches only much later, so every reconnect
 * lists first: a revision lower than one seen before, another cluster ID, or our own lease
 * missing from the listing is taken for a reset (a lease that merely expired during an outage is
 * handled the same way, which costs nothing but a delay before dead nodes' routes go). The
 * manager then writes its own lease back at once (before anything else, so a node joining
 * afterwards sees the subnet taken), lists again and keeps remote leases that are not back yet
 * for a grace period, so their routes do not flap while their nodes write them back.
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
  private readonly resetGraceMs: number;
  private readonly listeners = new Set<(event: LeaseEvent) => void>();
  private own: OwnLease | undefined;
  private readonly remote = new Map<string, RemoteLease>();
  /** Remote leases known before a store reset and not seen since. */
  private readonly unconfirmed = new Set<string>();
  private renewTimer: NodeJS.Timeout | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private watchHandle: WatchHandle | undefined;
  private watchRetryMs = WATCH_RETRY_MIN_MS;
  private lastRevision = 0;
  private clusterId: string | undefined;
  private reasserting: Promise<void> | undefined;
  private following = false;
  private listed = false;
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
    this.previousSubnet = options.previousSubnet;
    this.ttlSeconds = ttl;
    this.renewDelayMs = (ttl - margin) * 1000;
    // Several retries must fit in the margin, or one slow store hiccup would let the lease lapse.
    this.renewRetryMs = Math.min(60_000, (margin * 1000) / 4);
    this.resetGraceMs = (options.resetGraceSeconds ?? DEFAULT_RESET_GRACE_SECONDS) * 1000;
  }

  get ownLease(): Lease | undefined {
    return this.own?.lease;
  }

  /** True once the first listing is applied: before that, the remote leases are incomplete. */
  get synced(): boolean {
    return this.listed;
  }

  remoteLeases(): Lease[] {
    return [...this.remote.values()].map((r) => r.lease);
  }

  on(listener: (event: LeaseEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Gets this node a subnet (see chooseLease: the lease carrying our PublicIP, else the previous
   * subnet if free, else a random free one), then keeps renewing it.
   */
  async acquire(): Promise<Lease> {
    for (let attempt = 0; attempt < ACQUIRE_ATTEMPTS; attempt++) {
      const listing = await this.store.list(SUBNETS_PREFIX);
      this.clusterId ??= listing.clusterId;
      const choice = chooseLease(this.config, listing.items, this.attrs.publicIP, this.previousSubnet);
      let revision: number | false;
      if (choice.kind === 'keep') {
        revision = await this.store.replaceIfValue(choice.key, choice.value, this.value, this.ttlSeconds);
      } else {
        if (choice.stale) await this.store.deleteIfValue(choice.stale.key, choice.stale.value);
        revision = await this.store.createIfAbsent(subnetKey(choice.subnet), this.value, this.ttlSeconds);
      }
      if (revision !== false) {
        const own = { lease: { subnet: choice.subnet, attrs: this.attrs }, key: subnetKey(choice.subnet), value: this.value, revision };
        this.own = own;
        this.scheduleRenewal(this.renewDelayMs);
        // The key may still be listed as the remote lease that held the subnet before it expired.
        this.dropRemote(own.key);
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
   * reported as `error` events, and every reconnect lists again (see the class comment).
   */
  async watch(): Promise<void> {
    if (this.following) return;
    const listing = await this.store.list(SUBNETS_PREFIX);
    this.following = true;
    this.clusterId ??= listing.clusterId;
    this.applyListing(listing);
    this.listed = true;
    await this.follow(listing.revision + 1);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.watchTimer);
    clearTimeout(this.graceTimer);
    await this.watchHandle?.stop();
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
      const revision = await this.store.renew(own.key, own.value, this.ttlSeconds);
      if (this.own !== own) return;
      if (revision !== false) {
        own.revision = Math.max(own.revision, revision);
        this.scheduleRenewal(this.renewDelayMs);
        this.emit({ type: 'renewed', lease: own.lease });
        return;
      }
      await this.reassert('deleted');
    } catch (err) {
      if (this.own !== own) return;
      this.scheduleRenewal(this.renewRetryMs);
      this.emit({ type: 'error', error: err as Error });
    }
  }

  /**
   * Writes our lease back if it is missing (create-if-absent, so a node that took the subnet in
   * the meantime keeps it and we report `lost`). One at a time; errors reach the caller.
   */
  private reassert(why: 'deleted' | 'reset'): Promise<void> {
    this.reasserting ??= this.writeBack(why).finally(() => (this.reasserting = undefined));
    return this.reasserting;
  }

  private async writeBack(why: 'deleted' | 'reset'): Promise<void> {
    const own = this.own;
    if (!own || this.stopped) return;
    for (;;) {
      const revision = await this.store.createIfAbsent(own.key, own.value, this.ttlSeconds);
      if (this.own !== own) return;
      if (revision !== false) {
        own.revision = revision;
        this.scheduleRenewal(this.renewDelayMs);
        this.emit({ type: 'reasserted', lease: own.lease, why });
        return;
      }
      const current = await this.store.get(own.key);
      if (this.own !== own) return;
      if (current?.value === own.value) {
        own.revision = Math.max(own.revision, current.revision);
        return;
      }
      if (current) {
        this.lose(own);
        return;
      }
    }
  }

  private lose(own: OwnLease): void {
    if (this.own !== own) return;
    this.own = undefined;
    clearTimeout(this.renewTimer);
    this.emit({ type: 'lost', lease: own.lease, reason: 'taken' });
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
    if (!(err instanceof StoreError && err.code === 'compacted')) this.emit({ type: 'error', error: err });
    void this.relist();
  }

  /** Lists again (checking for a reset, and that our own lease is there), then watches from there. */
  private async relist(): Promise<void> {
    if (this.stopped) return;
    try {
      let listing = await this.store.list(SUBNETS_PREFIX);
      const own = this.own;
      const reset =
        listing.clusterId !== this.clusterId
          ? `the store's cluster ID changed from ${this.clusterId} to ${listing.clusterId}`
          : listing.revision < this.lastRevision
            ? `the store's revision went back from ${this.lastRevision} to ${listing.revision}`
            : own && !listing.items.some((kv) => kv.key === own.key)
              ? `this node's lease ${own.key} was missing when listing again (it expired while the store was out of reach, or the store lost its data)`
              : undefined;
      if (reset) {
        this.clusterId = listing.clusterId;
        this.lastRevision = listing.revision;
        if (own) own.revision = 0;
        for (const key of this.remote.keys()) this.unconfirmed.add(key);
        this.startGrace();
        this.emit({ type: 'reset', reason: reset });
        await this.reassert('reset');
        listing = await this.store.list(SUBNETS_PREFIX);
      }
      if (this.stopped) return;
      this.applyListing(listing);
      await this.follow(listing.revision + 1);
    } catch (err) {
      this.emit({ type: 'error', error: err as Error });
      this.retryLater(() => void this.relist());
    }
  }

  private startGrace(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = setTimeout(() => {
      for (const key of [...this.unconfirmed]) this.dropRemote(key);
      this.unconfirmed.clear();
    }, this.resetGraceMs);
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
      this.applyPut(kv.key, kv.value, kv.revision);
    }
    for (const key of [...this.remote.keys()]) {
      if (!seen.has(key) && !this.unconfirmed.has(key)) this.dropRemote(key);
    }
  }

  private applyEvent(event: WatchEvent): void {
    this.lastRevision = Math.max(this.lastRevision, event.revision);
    if (event.type === 'put') {
      this.applyPut(event.key, event.value, event.revision);
      return;
    }
    this.unconfirmed.delete(event.key);
    const own = this.own;
    if (own && event.key === own.key && event.revision > own.revision) {
      void this.reassert('deleted').catch((err: Error) => {
        this.emit({ type: 'error', error: err });
        this.scheduleRenewal(this.renewRetryMs);
      });
    }
    this.dropRemote(event.key);
  }

  private applyPut(key: string, value: string, revision: number): void {
    const subnet = parseSubnetKey(key);
    if (!subnet) return;
    this.unconfirmed.delete(key);
    const own = this.own;
    if (own && key === own.key && revision > own.revision && value !== own.value) this.lose(own);
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
