import { readFileSync } from 'node:fs';
import { Etcd3, Range, castGrpcError, isRecoverableError, type ICompare, type IKeyValue, type IOptions, type IWatchResponse } from 'etcd3';
import {
  MAX_WRITE_OPS,
  StoreError,
  type StoreHealthReport,
  type KeyValue,
  type Listing,
  type Store,
  type WatchEvent,
  type WatchHandle,
  type WriteOp,
} from './store.js';

export interface EtcdTlsOptions {
  /** CA that signed the etcd server certificates. */
  caFile: string;
  /** Client certificate and key, for etcd started with --client-cert-auth; give both or neither. */
  certFile?: string;
  keyFile?: string;
}

export interface EtcdStoreOptions {
  /** Client URLs such as http://198.18.0.2:2379; requests fail over between them. */
  endpoints: string[];
  /** Key prefix every key lives under, e.g. /coreos.com/network. */
  prefix: string;
  tls?: EtcdTlsOptions;
  /** Deadline for each request (and for a watch to be accepted); default 5000 ms. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 5000;

/** A fault-handling policy that runs the call as it is (cockatiel's noop; the client calls only `execute`). */
const PASS_THROUGH = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal) =>
    Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal })),
} as unknown as ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
/** Keys per list request: a page of Weft's values (under 1 KiB each) stays far below the client's 64 MiB answer limit. */
const LIST_PAGE = 5000;

export class EtcdStore implements Store {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly endpoints: string[];
  private readonly timeoutMs: number;
  private readonly credentials: Pick<IOptions, 'credentials'> = {};

  constructor(options: EtcdStoreOptions) {
    if (options.endpoints.length === 0) {
      throw new StoreError('failed', 'no etcd endpoints given; pass at least one client URL such as http://127.0.0.1:2379');
    }
    for (const endpoint of options.endpoints) {
      if (!/^https?:\/\/[^/]+$/.test(endpoint)) {
        throw new StoreError('failed', `etcd endpoint "${endpoint}" is not a client URL; write it as http://HOST:PORT or https://HOST:PORT`);
      }
      if (options.tls && endpoint.startsWith('http://')) {
        throw new StoreError('failed', `etcd endpoint "${endpoint}" is plain http but TLS files were given; use https://`);
      }
    }
    this.endpoints = options.endpoints;
    this.prefix = `${options.prefix.replace(/\/+$/, '')}/`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const clientOptions: IOptions = {
      hosts: options.endpoints,
      dialTimeout: this.timeoutMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
      // Pings expose a silently dead peer under a long-lived watch stream; etcd accepts one every 5 s at most.
      // A list page of large values may pass gRPC's default 4 MiB answer limit; etcd itself sends up to 2 GiB.
      grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5_000, 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
      // The client's per-host circuit breaker (open for 5 s after 3 failures in a row) sends requests to
      // the other members while one is down. With one member there is no other: it only made a client
      // that started alongside etcd (lab up starts agents and etcd together) wait 5 s after etcd served.
      ...(options.endpoints.length === 1 && { faultHandling: { host: () => PASS_THROUGH } }),
    };
    if (options.tls) this.credentials = { credentials: readTls(options.tls) };
    this.client = new Etcd3({ ...clientOptions, ...this.credentials });
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.call(`get ${key}`, () => this.client.kv.range({ key: this.full(key) }));
    const kv = res.kvs[0];
    return kv ? this.toKeyValue(kv) : undefined;
  }

  async getMany(keys: string[]): Promise<(KeyValue | undefined)[]> {
    if (keys.length > MAX_WRITE_OPS) throw new StoreError('failed', `${keys.length} reads in one transaction; etcd takes at most ${MAX_WRITE_OPS}`);
    if (keys.length === 0) return [];
    const res = await this.call(`get ${keys.length} keys`, () => this.client.kv.txn({ success: keys.map((k) => ({ request_range: { key: this.full(k) } })) }));
    return res.responses.map((r) => {
      const kv = r.response_range?.kvs[0];
      return kv ? this.toKeyValue(kv) : undefined;
    });
  }

  /** Read in pages at one revision, so 30,000 Services and their slices never make one huge answer. */
  async list(prefix: string): Promise<Listing> {
    const range = Range.prefix(this.full(prefix));
    const items: KeyValue[] = [];
    let start = range.start;
    let revision: string | undefined;
    for (;;) {
      const from = start;
      const res = await this.call(`list ${prefix}`, () =>
        this.client.kv.range({ key: from, range_end: range.end, limit: LIST_PAGE, ...(revision !== undefined && { revision }) }),
      );
      revision ??= res.header.revision;
      for (const kv of res.kvs) items.push(this.toKeyValue(kv));
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) return { items, revision: Number(revision), clusterId: String(res.header.cluster_id) };
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  createIfAbsent(key: string, value: string, ttlSeconds?: number): Promise<number | false> {
    return this.putIf(key, { key: this.full(key), target: 'Version', result: 'Equal', version: 0 }, value, ttlSeconds);
  }

  replaceIfValue(key: string, expected: string, value: string, ttlSeconds?: number): Promise<number | false> {
    const compare: ICompare = { key: this.full(key), target: 'Value', result: 'Equal', value: Buffer.from(expected) };
    return this.putIf(key, compare, value, ttlSeconds);
  }

  /**
   * A keepalive on the key's lease when the key holds `expected` on a lease of `ttlSeconds`: one
   * read and one keepalive, no raft write and no watch event. Otherwise (no lease, another TTL, or
   * the lease ran out between the read and the keepalive) a compare-and-swap rewrite.
   */
  async renew(key: string, expected: string, ttlSeconds: number): Promise<number | false> {
    const res = await this.call(`get ${key}`, () => this.client.kv.range({ key: this.full(key) }));
    const kv = res.kvs[0];
    if (kv?.value.toString() !== expected) return false;
    if (kv.lease !== '0' && (await this.keepAlive(key, kv.lease)) === ttlSeconds) return Number(kv.mod_revision);
    return this.replaceIfValue(key, expected, expected, ttlSeconds);
  }

  /** The lease's TTL after one keepalive (0: it had expired). */
  private async keepAlive(key: string, lease: string): Promise<number> {
    const stream = await this.call(`keep the lease of ${key} alive`, () => this.client.leaseClient.leaseKeepAlive());
    try {
      return await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new StoreError('unavailable', `etcd at ${this.endpoints.join(', ')} did not answer a keepalive for ${key}`)),
          this.timeoutMs,
        );
        stream.on('data', (r: { TTL: string }) => {
          clearTimeout(timer);
          resolve(Number(r.TTL));
        });
        stream.on('error', (err: Error) => {
          clearTimeout(timer);
          reject(this.toStoreError(`keep the lease of ${key} alive`, err));
        });
        stream.write({ ID: lease });
      });
    } finally {
      stream.end();
      stream.cancel();
    }
  }

  async deleteIfValue(key: string, expected: string): Promise<boolean> {
    const res = await this.call(`conditional delete ${key}`, () =>
      this.client.kv.txn({
        compare: [{ key: this.full(key), target: 'Value', result: 'Equal', value: Buffer.from(expected) }],
        success: [{ request_delete_range: { key: this.full(key) } }],
      }),
    );
    return res.succeeded;
  }

  async put(key: string, value: string, ttlSeconds?: number): Promise<number> {
    const lease = ttlSeconds === undefined ? undefined : await this.grant(key, ttlSeconds);
    const res = await this.call(`put ${key}`, () => this.client.kv.put({ key: this.full(key), value: Buffer.from(value), ...(lease && { lease }) }));
    return Number(res.header.revision);
  }

  async delete(key: string): Promise<boolean> {
    const res = await this.call(`delete ${key}`, () => this.client.kv.deleteRange({ key: this.full(key) }));
    return Number(res.deleted) > 0;
  }

  async writeMany(ops: WriteOp[]): Promise<number | false> {
    if (ops.length > MAX_WRITE_OPS) throw new StoreError('failed', `${ops.length} writes in one transaction; etcd takes at most ${MAX_WRITE_OPS}`);
    const res = await this.call(`write ${ops.length} keys`, () =>
      this.client.kv.txn({
        compare: ops
          .filter((op) => op.type === 'create')
          .map((op) => ({ key: this.full(op.key), target: 'Version' as const, result: 'Equal' as const, version: 0 })),
        success: ops.map((op) =>
          op.type === 'delete'
            ? { request_delete_range: { key: this.full(op.key) } }
            : { request_put: { key: this.full(op.key), value: Buffer.from(op.value) } },
        ),
      }),
    );
    return res.succeeded && Number(res.header.revision);
  }

  async watch(prefix: string, fromRevision: number, onEvent: (event: WatchEvent) => void, onError: (err: StoreError) => void): Promise<WatchHandle> {
    const stream = await this.call(`watch ${prefix}`, () => this.client.watchClient.watch());
    const range = Range.prefix(this.full(prefix));
    let stopped = false;
    let created = false;
    let settle: { resolve: () => void; reject: (err: StoreError) => void } | undefined;
    const accepted = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    const where = this.endpoints.join(', ');
    const timer = setTimeout(
      () => fail(new StoreError('unavailable', `etcd at ${where} did not accept a watch on ${prefix} within ${this.timeoutMs} ms`)),
      this.timeoutMs,
    );

    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      // Ending our side first keeps the client library from counting the cancel as a host failure.
      stream.end();
      stream.cancel();
    };
    const fail = (err: StoreError): void => {
      if (stopped) return;
      stop();
      if (created) onError(err);
      else settle?.reject(err);
    };

    stream.on('data', (res: IWatchResponse) => {
      if (stopped) return;
      if (res.canceled) {
        const compactRevision = Number(res.compact_revision);
        const compacted = `watch on ${prefix} from revision ${fromRevision} failed: history before revision ${compactRevision} was compacted; list again`;
        fail(
          compactRevision > 0
            ? new StoreError('compacted', compacted, { compactRevision })
            : new StoreError('failed', `etcd cancelled the watch on ${prefix}: ${res.cancel_reason || 'no reason given'}`),
        );
        return;
      }
      if (res.created) {
        created = true;
        clearTimeout(timer);
        settle?.resolve();
      }
      for (const event of res.events) {
        onEvent(this.toWatchEvent(event.type, event.kv));
        if (stopped) return;
      }
    });
    stream.on('error', (err: Error) => fail(this.toStoreError(`watch ${prefix}`, err)));
    stream.on('end', () => fail(new StoreError('unavailable', `etcd at ${where} ended the watch on ${prefix}`)));
    stream.write({ create_request: { key: range.start, range_end: range.end, start_revision: fromRevision } });

    await accepted;
    return {
      stop: () => {
        stop();
        return Promise.resolve();
      },
    };
  }

  /**
   * Healthy while the member the client reaches knows a leader (one status call, answered locally
   * by that member, no raft round). Otherwise every member is asked on its own, so the report tells
   * "no member answers" from "members answer but none has a leader" (no quorum: writes and
   * linearizable reads stop, while watches on a leaderless member just fall silent).
   */
  async health(): Promise<StoreHealthReport> {
    const leader = await this.client.maintenance.status().then(
      (r) => r.leader !== '0',
      () => false,
    );
    if (leader) return { state: 'ok' };
    const members = await Promise.all(this.endpoints.map((endpoint) => this.memberStatus(endpoint)));
    const answering = members.filter((m) => m.answers);
    if (answering.some((m) => m.leader)) return { state: 'ok' };
    const of = `${answering.length} of ${members.length} member${members.length === 1 ? '' : 's'}`;
    if (answering.length === 0) {
      return { state: 'unreachable', detail: `no member answers (${members.map((m) => `${m.endpoint}: ${m.error}`).join('; ')})` };
    }
    return {
      state: 'no-quorum',
      detail: `${of} answer (${answering.map((m) => m.endpoint).join(', ')}) and none has a leader; a majority of ${Math.floor(members.length / 2) + 1} is needed`,
    };
  }

  private async memberStatus(endpoint: string): Promise<{ endpoint: string; answers: boolean; leader?: boolean; error?: string }> {
    const one = new Etcd3({
      hosts: [endpoint],
      dialTimeout: this.timeoutMs,
      defaultCallOptions: () => ({ deadline: Date.now() + Math.min(this.timeoutMs, 2000) }),
      ...this.credentials,
    });
    try {
      const r = await one.maintenance.status();
      return { endpoint, answers: true, leader: r.leader !== '0' };
    } catch (err) {
      return { endpoint, answers: false, error: (err as Error).message };
    } finally {
      one.close();
    }
  }

  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }

  private async putIf(key: string, compare: ICompare, value: string, ttlSeconds: number | undefined): Promise<number | false> {
    const lease = ttlSeconds === undefined ? undefined : await this.grant(key, ttlSeconds);
    const res = await this.call(`conditional put ${key}`, () =>
      this.client.kv.txn({
        compare: [compare],
        success: [{ request_put: { key: this.full(key), value: Buffer.from(value), ...(lease && { lease }) } }],
      }),
    );
    // Only a definite "no" frees the lease early; after an error the write may have landed, so
    // the lease is left to expire by itself rather than risk deleting the key it now holds.
    if (!res.succeeded && lease) {
      await this.client.leaseClient.leaseRevoke({ ID: lease }).catch(() => undefined);
    }
    return res.succeeded && Number(res.header.revision);
  }

  private async grant(key: string, ttlSeconds: number): Promise<string> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new StoreError('failed', `TTL for ${key} must be a whole number of seconds, at least 1 (got ${ttlSeconds})`);
    }
    const res = await this.call(`grant lease for ${key}`, () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    return res.ID;
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.toStoreError(what, err);
    }
  }

  private toStoreError(what: string, err: unknown): StoreError {
    if (err instanceof StoreError) return err;
    const message = err instanceof Error ? err.message : String(err);
    // Stream errors arrive as plain gRPC errors; unary ones are already typed by the client.
    if (err instanceof Error && (isRecoverableError(castGrpcError(err)) || 'isBrokenCircuitError' in err)) {
      return new StoreError('unavailable', `etcd unreachable at ${this.endpoints.join(', ')} (${what}): ${message}`, { cause: err });
    }
    return new StoreError('failed', `etcd ${what} failed: ${message}`, { cause: err });
  }

  private full(key: string): Buffer {
    return Buffer.from(this.prefix + key);
  }

  private toKeyValue(kv: IKeyValue): KeyValue {
    return { key: this.relative(kv.key), value: kv.value.toString(), revision: Number(kv.mod_revision) };
  }

  private toWatchEvent(type: 'Put' | 'Delete', kv: IKeyValue): WatchEvent {
    const key = this.relative(kv.key);
    const revision = Number(kv.mod_revision);
    return type === 'Put' ? { type: 'put', key, value: kv.value.toString(), revision } : { type: 'delete', key, revision };
  }

  private relative(key: Buffer): string {
    return key.toString().slice(this.prefix.length);
  }
}

function readTls(tls: EtcdTlsOptions): NonNullable<IOptions['credentials']> {
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new StoreError('failed', 'etcd TLS needs both certFile and keyFile (or neither)');
  }
  return {
    rootCertificate: readTlsFile('caFile', tls.caFile),
    ...(tls.certFile !== undefined && { certChain: readTlsFile('certFile', tls.certFile) }),
    ...(tls.keyFile !== undefined && { privateKey: readTlsFile('keyFile', tls.keyFile) }),
  };
}

function readTlsFile(field: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StoreError('failed', `cannot read etcd TLS ${field} ${path}: ${(err as Error).message}`, { cause: err });
  }
}
