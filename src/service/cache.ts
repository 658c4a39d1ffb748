import { StoreError, type Listing, type Store, type WatchEvent, type WatchHandle } from '../store/store.js';
import { parseEntry, entryKind, type RegistryEntry } from './registry.js';
import type { EndpointSliceRecord, PodRecord, Service } from './types.js';

type Change<K extends string, T> = { kind: K; type: 'put' | 'delete'; key: string; old?: T; now?: T };

/**
 * One change of the registry as the cache applied it (`key` is `ns/name`), or `resync`: the cache
 * listed everything again (after compacted history, or a store that lost its data) and a consumer
 * should recompute from the maps.
 */
export type RegistryEvent = Change<'service', Service> | Change<'pod', PodRecord> | Change<'slice', EndpointSliceRecord> | { kind: 'resync' };

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;
/** Listed to learn the store's revision and cluster ID without reading data: nothing is ever written under it. */
const PROBE_PREFIX = 'revision-probe/';

const KIND_OF = { services: 'service', pods: 'pod', slices: 'slice' } as const;

/**
 * The whole registry in memory, following the store: one list, then a watch from the revision
 * after it. A watch that ends because the store was out of reach resumes from the last revision
 * seen, unless the store came back as another cluster or with its revision gone back (it lost its
 * data); then, and after compacted history, the cache lists again and emits `resync`.
 */
export class RegistryCache {
  readonly services = new Map<string, Service>();
  readonly pods = new Map<string, PodRecord>();
  readonly slices = new Map<string, EndpointSliceRecord>();
  /** True once the first listing is in. */
  synced = false;
  /** The last store error, cleared by the next successful watch. */
  lastError: Error | undefined;

  private readonly listeners = new Set<(e: RegistryEvent) => void>();
  private handle: WatchHandle | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private revision = 0;
  private clusterId: string | undefined;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly log: (msg: string) => void = () => undefined,
  ) {}

  on(listener: (e: RegistryEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Lists the registry and starts following it; rejects only when that first list or watch fails. */
  async start(): Promise<void> {
    const listing = await this.store.list('');
    this.apply(listing);
    this.synced = true;
    this.handle = await this.store.watch(
      '',
      this.revision + 1,
      (e) => this.onEvent(e),
      (err) => this.onError(err),
    );
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    void this.handle?.stop();
    this.handle = undefined;
  }

  private apply(listing: Listing): void {
    this.clusterId = listing.clusterId;
    this.revision = listing.revision;
    this.services.clear();
    this.pods.clear();
    this.slices.clear();
    for (const kv of listing.items) {
      const entry = parseEntry(kv.key, kv.value);
      if (entry) this.mapOf(entry.kind).set(entry.id, entry.record);
    }
  }

  private mapOf(kind: RegistryEntry['kind']): Map<string, RegistryEntry['record']> {
    return this[kind];
  }

  private onEvent(e: WatchEvent): void {
    this.revision = Math.max(this.revision, e.revision);
    const kind = entryKind(e.key);
    if (!kind) return;
    const map = this.mapOf(kind);
    const id = e.key.slice(e.key.indexOf('/') + 1);
    const old = map.get(id);
    if (e.type === 'put') {
      const entry = parseEntry(e.key, e.value);
      if (!entry) {
        this.log(`registry: ignoring unreadable value at ${e.key}`);
        return;
      }
      map.set(id, entry.record);
      this.emit({ kind: KIND_OF[kind], type: 'put', key: id, ...(old && { old }), now: entry.record } as RegistryEvent);
    } else if (old) {
      map.delete(id);
      this.emit({ kind: KIND_OF[kind], type: 'delete', key: id, old } as RegistryEvent);
    }
  }

  private onError(err: StoreError): void {
    if (this.stopped) return;
    this.handle = undefined;
    this.lastError = err;
    this.log(`registry watch ended: ${err.message}`);
    if (err.code === 'compacted') void this.relist();
    else void this.resume();
  }

  /** Watches again from the last revision seen, if the store is still the one we listed. */
  private async resume(): Promise<void> {
    if (this.stopped) return;
    try {
      const probe = await this.store.list(PROBE_PREFIX);
      if (probe.clusterId !== this.clusterId || probe.revision < this.revision) {
        this.log(`registry: the store lost its data or is another cluster (revision ${this.revision} → ${probe.revision}); listing again`);
        await this.relist();
        return;
      }
      await this.watchFrom(this.revision + 1);
    } catch (err) {
      this.retry(err as Error, () => void this.resume());
    }
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    try {
      const listing = await this.store.list('');
      if (this.stopped) return;
      this.apply(listing);
      this.emit({ kind: 'resync' });
      await this.watchFrom(this.revision + 1);
    } catch (err) {
      this.retry(err as Error, () => void this.relist());
    }
  }

  private async watchFrom(revision: number): Promise<void> {
    const handle = await this.store.watch(
      '',
      revision,
      (e) => this.onEvent(e),
      (err) => this.onError(err),
    );
    if (this.stopped) {
      await handle.stop();
      return;
    }
    this.handle = handle;
    this.retryMs = RETRY_MIN_MS;
    this.lastError = undefined;
  }

  private retry(err: Error, fn: () => void): void {
    if (this.stopped) return;
    this.lastError = err;
    if (err instanceof StoreError && err.code === 'compacted') {
      void this.relist();
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  private emit(e: RegistryEvent): void {
    for (const l of this.listeners) l(e);
  }
}
