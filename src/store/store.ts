/**
 * The key-value store the node agent keeps its cluster state in (flannel's etcd schema).
 *
 * Keys are relative to the store's prefix (`subnets/10.244.3.0-24` under `/coreos.com/network`).
 * Revisions are the store's global, monotonically increasing write counter: every write gets one,
 * `list` says which revision it saw, and `watch` replays every change after a given revision.
 *
 * TTLs: a key written with `ttlSeconds` disappears that long after the write unless renewed.
 * `renew` keeps the key's etcd lease alive where the store can (no write: no revision, no watch
 * event, so N nodes renewing cost N keepalives, not N writes sent to N watchers each); a lease that
 * already expired while the store was unreachable took its key with it, and the caller writes the
 * key back through a compare-and-swap (`createIfAbsent`), so it never clobbers a new owner.
 */

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the last write to this key. */
  revision: number;
}

export interface Listing {
  items: KeyValue[];
  /** The store revision the listing reflects; watch from `revision + 1` to miss nothing. */
  revision: number;
  /**
   * Which store answered (etcd's cluster ID). A different ID, or a revision lower than one seen
   * before, means the store lost its data or is another store: nothing seen before still holds.
   */
  clusterId: string;
}

export type WatchEvent = { type: 'put'; key: string; value: string; revision: number } | { type: 'delete'; key: string; revision: number };

export interface WatchHandle {
  /** Ends the watch; no callback fires afterwards. Idempotent. */
  stop(): Promise<void>;
}

/**
 * `unavailable`: the store could not be reached or did not answer in time; retrying later is the fix.
 * `compacted`: a watch asked for history the store has discarded; list again and watch from there.
 * `failed`: anything else (permissions, bad request); retrying will not help.
 */
export type StoreErrorCode = 'unavailable' | 'compacted' | 'failed';

export class StoreError extends Error {
  override name = 'StoreError';
  readonly code: StoreErrorCode;
  /** For `compacted`: the oldest revision the store still has. */
  readonly compactRevision: number | undefined;

  constructor(code: StoreErrorCode, message: string, options: { cause?: unknown; compactRevision?: number } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.compactRevision = options.compactRevision;
  }
}

export function isStoreUnavailable(err: unknown): boolean {
  return err instanceof StoreError && err.code === 'unavailable';
}

export type WriteOp = { type: 'put'; key: string; value: string } | { type: 'create'; key: string; value: string } | { type: 'delete'; key: string };

/** etcd's default --max-txn-ops: the most operations one `writeMany` or `getMany` may carry. */
export const MAX_WRITE_OPS = 128;

/**
 * The store's own view of itself, for an agent to say why writes fail: `unreachable` (no member
 * answers) or `no-quorum` (members answer but none has a leader, so nothing can be written).
 */
export type StoreHealthReport = { state: 'ok' } | { state: 'unreachable' | 'no-quorum'; detail: string };

export interface Store {
  get(key: string): Promise<KeyValue | undefined>;
  /** Up to MAX_WRITE_OPS keys read in one request (etcd: one transaction), in the order asked. */
  getMany(keys: string[]): Promise<(KeyValue | undefined)[]>;
  /** Every key starting with `prefix`, in key order, with the revision they were read at. */
  list(prefix: string): Promise<Listing>;
  /** Writes only if the key does not exist: the revision of the write, or false when it exists (someone else won). */
  createIfAbsent(key: string, value: string, ttlSeconds?: number): Promise<number | false>;
  /** Writes only if the key holds exactly `expected`: the revision of the write, or false when it is absent or different. */
  replaceIfValue(key: string, expected: string, value: string, ttlSeconds?: number): Promise<number | false>;
  /**
   * Another `ttlSeconds` for a key that holds exactly `expected`: the key's revision, or false when
   * it is absent or different. Like replaceIfValue(key, expected, expected, ttlSeconds), but etcd
   * only refreshes the key's lease when it has one of that TTL (no write, no watch event).
   */
  renew(key: string, expected: string, ttlSeconds: number): Promise<number | false>;
  /** Deletes only if the key holds exactly `expected`, in one transaction: true when it did. */
  deleteIfValue(key: string, expected: string): Promise<boolean>;
  /** Unconditional write; returns the revision of the write. */
  put(key: string, value: string, ttlSeconds?: number): Promise<number>;
  /** True when the key existed. */
  delete(key: string): Promise<boolean>;
  /**
   * Up to MAX_WRITE_OPS writes in one transaction (for etcd one commit, so bulk writes cost one disk
   * sync per batch instead of one per key): all of them, the revision of the write, or, when a
   * `create` finds its key present, none of them and false.
   */
  writeMany(ops: WriteOp[]): Promise<number | false>;
  /**
   * Delivers every change to keys under `prefix` from `fromRevision` on, in revision order.
   * Resolves once the store has accepted the watch (rejects with a StoreError if it cannot).
   * Afterwards a failure is reported once through `onError` and ends the watch: on `compacted`
   * (which etcd reports only after accepting) the caller must list again; on `unavailable` it may
   * watch again from the revision after the last one it saw.
   */
  watch(prefix: string, fromRevision: number, onEvent: (event: WatchEvent) => void, onError: (err: StoreError) => void): Promise<WatchHandle>;
  /** Where the store can tell (etcd asks each member for its leader); absent: only request failures tell. */
  health?(): Promise<StoreHealthReport>;
  close(): Promise<void>;
}
