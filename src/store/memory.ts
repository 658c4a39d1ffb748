import { randomBytes } from 'node:crypto';
import { MAX_WRITE_OPS, StoreError, type KeyValue, type Listing, type Store, type WatchEvent, type WatchHandle, type WriteOp } from './store.js';

interface Entry {
  value: string;
  revision: number;
  timer: NodeJS.Timeout | undefined;
}

interface Watcher {
  prefix: string;
  onEvent: (event: WatchEvent) => void;
  onError: (err: StoreError) => void;
  queue: WatchEvent[];
  stopped: boolean;
}

/**
 * A Store in memory with etcd's semantics (one revision counter, TTLs, watches that replay history,
 * compaction), and faults a test injects: unavailable, slow, compacted history, a data reset
 * (revision back to 1, every key gone) and a change of cluster ID. Deterministic unit tests of
 * lease races and outages run against it; integration tests use a real etcd.
 */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Entry>();
  private history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private revision = 1;
  private compactedAt = 0;
  private down = false;
  private delayMs = 0;
  private closed = false;
  clusterId = randomBytes(8).toString('hex');
  /** Every write that reached the store (put, create, replace, delete), for asserting on. */
  readonly writes: string[] = [];

  /** While true every call fails as `unavailable` and running watches end with that error. */
  setUnavailable(down: boolean): void {
    this.down = down;
    if (down) this.endWatches(new StoreError('unavailable', 'memory store: unavailable (injected)'));
  }

  /** Every call takes this long before it acts. */
  setDelay(ms: number): void {
    this.delayMs = ms;
  }

  /** Discards history before `revision` (default: all of it), as `etcdctl compact` does. */
  compact(revision = this.revision): void {
    this.compactedAt = revision;
    this.history = this.history.filter((e) => e.revision >= revision);
  }

  /**
   * The store lost its data (restored from nothing): every key gone, the revision back to 1, and
   * running watches end as an etcd restart ends them. `newCluster` also changes the cluster ID.
   */
  reset(options: { newCluster?: boolean } = {}): void {
    for (const entry of this.data.values()) clearTimeout(entry.timer);
    this.data.clear();
    this.history = [];
    this.revision = 1;
    this.compactedAt = 0;
    if (options.newCluster) this.clusterId = randomBytes(8).toString('hex');
    this.endWatches(new StoreError('unavailable', 'memory store: restarted (injected)'));
  }

  /** Removes a key as its TTL running out would. */
  expire(key: string): void {
    if (this.data.has(key)) this.remove(key);
  }

  /** The current revision (the last write's). */
  get currentRevision(): number {
    return this.revision;
  }

  async get(key: string): Promise<KeyValue | undefined> {
    await this.enter();
    const entry = this.data.get(key);
    return entry && { key, value: entry.value, revision: entry.revision };
  }

  async getMany(keys: string[]): Promise<(KeyValue | undefined)[]> {
    await this.enter();
    if (keys.length > MAX_WRITE_OPS) throw new StoreError('failed', `${keys.length} reads in one transaction; etcd takes at most ${MAX_WRITE_OPS}`);
    return keys.map((key) => {
      const entry = this.data.get(key);
      return entry && { key, value: entry.value, revision: entry.revision };
    });
  }

  async list(prefix: string): Promise<Listing> {
    await this.enter();
    const items = [...this.data.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, e]) => ({ key, value: e.value, revision: e.revision }));
    return { items, revision: this.revision, clusterId: this.clusterId };
  }

  async createIfAbsent(key: string, value: string, ttlSeconds?: number): Promise<number | false> {
    await this.enter();
    checkTtl(key, ttlSeconds);
    if (this.data.has(key)) return false;
    return this.write(key, value, ttlSeconds);
  }

  async replaceIfValue(key: string, expected: string, value: string, ttlSeconds?: number): Promise<number | false> {
    await this.enter();
    checkTtl(key, ttlSeconds);
    if (this.data.get(key)?.value !== expected) return false;
    return this.write(key, value, ttlSeconds);
  }

  /** As etcd's lease keepalive: a fresh TTL and no new revision, so watchers hear nothing. */
  async renew(key: string, expected: string, ttlSeconds: number): Promise<number | false> {
    await this.enter();
    checkTtl(key, ttlSeconds);
    const entry = this.data.get(key);
    if (entry?.value !== expected) return false;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => this.expire(key), ttlSeconds * 1000);
    entry.timer.unref();
    return entry.revision;
  }

  async deleteIfValue(key: string, expected: string): Promise<boolean> {
    await this.enter();
    if (this.data.get(key)?.value !== expected) return false;
    this.remove(key);
    return true;
  }

  async put(key: string, value: string, ttlSeconds?: number): Promise<number> {
    await this.enter();
    checkTtl(key, ttlSeconds);
    return this.write(key, value, ttlSeconds);
  }

  async delete(key: string): Promise<boolean> {
    await this.enter();
    if (!this.data.has(key)) return false;
    this.remove(key);
    return true;
  }

  async writeMany(ops: WriteOp[]): Promise<number | false> {
    await this.enter();
    if (ops.length > MAX_WRITE_OPS) throw new StoreError('failed', `${ops.length} writes in one transaction; etcd takes at most ${MAX_WRITE_OPS}`);
    if (ops.some((op) => op.type === 'create' && this.data.has(op.key))) return false;
    // etcd gives a transaction's writes one revision; separate ones change nothing a reader here relies on.
    for (const op of ops) {
      if (op.type === 'delete') {
        if (this.data.has(op.key)) this.remove(op.key);
      } else this.write(op.key, op.value, undefined);
    }
    return this.revision;
  }

  async watch(prefix: string, fromRevision: number, onEvent: (event: WatchEvent) => void, onError: (err: StoreError) => void): Promise<WatchHandle> {
    await this.enter();
    const watcher: Watcher = { prefix, onEvent, onError, queue: [], stopped: false };
    this.watchers.add(watcher);
    if (fromRevision > 0 && fromRevision < this.compactedAt) {
      // etcd accepts the watch, then cancels it.
      setImmediate(() =>
        this.endWatch(
          watcher,
          new StoreError('compacted', `memory store: history before ${this.compactedAt} was compacted`, { compactRevision: this.compactedAt }),
        ),
      );
    } else {
      this.deliver(
        watcher,
        this.history.filter((e) => e.revision >= fromRevision && e.key.startsWith(prefix)),
      );
    }
    return {
      stop: () => {
        watcher.stopped = true;
        this.watchers.delete(watcher);
        return Promise.resolve();
      },
    };
  }

  close(): Promise<void> {
    this.closed = true;
    for (const entry of this.data.values()) clearTimeout(entry.timer);
    for (const w of this.watchers) w.stopped = true;
    this.watchers.clear();
    return Promise.resolve();
  }

  private async enter(): Promise<void> {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.closed) throw new StoreError('failed', 'memory store: closed');
    if (this.down) throw new StoreError('unavailable', 'memory store: unavailable (injected)');
  }

  private write(key: string, value: string, ttlSeconds: number | undefined): number {
    const revision = ++this.revision;
    clearTimeout(this.data.get(key)?.timer);
    const timer = ttlSeconds === undefined ? undefined : setTimeout(() => this.expire(key), ttlSeconds * 1000);
    timer?.unref();
    this.data.set(key, { value, revision, timer });
    this.writes.push(`put ${key}`);
    this.publish({ type: 'put', key, value, revision });
    return revision;
  }

  private remove(key: string): void {
    clearTimeout(this.data.get(key)?.timer);
    this.data.delete(key);
    const revision = ++this.revision;
    this.writes.push(`delete ${key}`);
    this.publish({ type: 'delete', key, revision });
  }

  private publish(event: WatchEvent): void {
    this.history.push(event);
    for (const w of this.watchers) if (event.key.startsWith(w.prefix)) this.deliver(w, [event]);
  }

  /** Events arrive asynchronously and in order, as from a stream. */
  private deliver(watcher: Watcher, events: WatchEvent[]): void {
    if (events.length === 0) return;
    const idle = watcher.queue.length === 0;
    watcher.queue.push(...events);
    if (!idle) return;
    setImmediate(() => {
      while (watcher.queue.length > 0 && !watcher.stopped) watcher.onEvent(watcher.queue.shift()!);
      watcher.queue.length = 0;
    });
  }

  private endWatches(err: StoreError): void {
    for (const w of [...this.watchers]) this.endWatch(w, err);
  }

  private endWatch(watcher: Watcher, err: StoreError): void {
    if (watcher.stopped) return;
    watcher.stopped = true;
    this.watchers.delete(watcher);
    watcher.onError(err);
  }
}

function checkTtl(key: string, ttlSeconds: number | undefined): void {
  if (ttlSeconds !== undefined && (!Number.isInteger(ttlSeconds) || ttlSeconds < 1)) {
    throw new StoreError('failed', `TTL for ${key} must be a whole number of seconds, at least 1 (got ${ttlSeconds})`);
  }
}
