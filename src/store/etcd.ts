import { readFileSync } from 'node:fs';
import http, { type ClientRequest, type IncomingMessage } from 'node:http';
import https from 'node:https';
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

/**
 * Under --client-cert-auth, etcd's JSON gateway calls etcd's own gRPC server with the server
 * certificate as its client certificate, so that certificate must allow client auth as well as
 * server auth (kubeadm's etcd server certificates do); otherwise every call fails "connection closed".
 */
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
/** Keys per list request: a page of Weft's values (under 1 KiB each) keeps each answer small. */
const LIST_PAGE = 5000;
/**
 * TCP keepalive on every connection, so a peer that vanished without a reset (a partition, a
 * powered-off host) ends a long-lived watch in seconds rather than never (Node sets the probe
 * interval to 1 s and the count to 10 after this idle time).
 */
const KEEPALIVE_MS = 10_000;
/** Errors that mean the request never reached the member: safe to send to another one, writes included. */
const NOT_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'WEFT_CONNECT_TIMEOUT']);
/** gRPC status codes, as the gateway passes them on, that mean "not now" rather than "no". */
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_UNAVAILABLE = 14;

/** The gateway's JSON for a key-value pair: bytes in base64, 64-bit numbers as strings, zero values left out. */
interface GatewayKv {
  key: string;
  value?: string;
  mod_revision?: string;
  lease?: string;
}
interface GatewayHeader {
  revision?: string;
  cluster_id?: string;
}
interface RangeResponse {
  header: GatewayHeader;
  kvs?: GatewayKv[];
  more?: boolean;
}
interface TxnResponse {
  header: GatewayHeader;
  succeeded?: boolean;
  responses?: { response_range?: { kvs?: GatewayKv[] } }[];
}
interface WatchResponse {
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: { type?: 'PUT' | 'DELETE'; kv: GatewayKv }[];
}
type WatchMessage = { result?: WatchResponse; error?: { grpc_code?: number; message?: string } };
type RequestOp =
  { request_range: { key: string } } | { request_put: { key: string; value: string; lease?: string } } | { request_delete_range: { key: string } };
interface Compare {
  key: string;
  target: 'VERSION' | 'VALUE';
  result: 'EQUAL';
  version?: string;
  value?: string;
}

/** A failed request to one member: `sent` says whether the member may have acted on it. */
class GatewayError extends Error {
  constructor(
    message: string,
    readonly sent: boolean,
    readonly transient: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const b64 = (b: Buffer | string): string => Buffer.from(b).toString('base64');
const unb64 = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64');

/** etcd's range end for "every key starting with `prefix`": the prefix with its last byte below 0xff raised by one. */
function prefixEnd(prefix: Buffer): Buffer {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) return Buffer.concat([prefix.subarray(0, i), Buffer.from([prefix[i]! + 1])]);
  }
  return Buffer.from([0]);
}

/**
 * The store over etcd's v3 API through its JSON gateway (served on every client URL since etcd
 * 3.3), with Node's own HTTP client. The gRPC client (etcd3 with grpc-js and protobufjs) cost each
 * agent about 0.45 s of CPU to load and 30 MB of memory; a 100-node lab starts 100 agents on two
 * cores. The gateway carries every call Weft makes, watches and lease keepalives included (as
 * newline-separated JSON streams).
 */
export class EtcdStore implements Store {
  private readonly prefix: string;
  private readonly endpoints: string[];
  private readonly timeoutMs: number;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;
  /** The member that answered last: every call starts there. */
  private current = 0;
  private closed = false;
  private readonly open = new Set<ClientRequest>();

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
    const secure = options.endpoints[0]!.startsWith('https://');
    if (options.endpoints.some((e) => e.startsWith('https://') !== secure)) {
      throw new StoreError('failed', `etcd endpoints ${options.endpoints.join(', ')} mix http and https; give every member's client URL with one scheme`);
    }
    this.endpoints = options.endpoints;
    this.prefix = `${options.prefix.replace(/\/+$/, '')}/`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const agentOptions = { keepAlive: true, keepAliveMsecs: KEEPALIVE_MS };
    if (secure) {
      this.transport = https;
      this.agent = new https.Agent({ ...agentOptions, ...(options.tls && readTls(options.tls)) });
    } else {
      this.transport = http;
      this.agent = new http.Agent(agentOptions);
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.read<RangeResponse>(`get ${key}`, '/v3/kv/range', { key: this.full(key) });
    const kv = res.kvs?.[0];
    return kv ? this.toKeyValue(kv) : undefined;
  }

  async getMany(keys: string[]): Promise<(KeyValue | undefined)[]> {
    if (keys.length > MAX_WRITE_OPS) throw new StoreError('failed', `${keys.length} reads in one transaction; etcd takes at most ${MAX_WRITE_OPS}`);
    if (keys.length === 0) return [];
    const res = await this.read<TxnResponse>(`get ${keys.length} keys`, '/v3/kv/txn', {
      success: keys.map((k): RequestOp => ({ request_range: { key: this.full(k) } })),
    });
    return keys.map((_, i) => {
      const kv = res.responses?.[i]?.response_range?.kvs?.[0];
      return kv ? this.toKeyValue(kv) : undefined;
    });
  }

  /** Read in pages at one revision, so 30,000 Services and their slices never make one huge answer. */
  async list(prefix: string): Promise<Listing> {
    const start = Buffer.from(this.prefix + prefix);
    const end = b64(prefixEnd(start));
    const items: KeyValue[] = [];
    let from = b64(start);
    let revision: string | undefined;
    let clusterId = '';
    for (;;) {
      const res = await this.read<RangeResponse>(`list ${prefix}`, '/v3/kv/range', {
        key: from,
        range_end: end,
        limit: LIST_PAGE,
        ...(revision !== undefined && { revision }),
      });
      revision ??= res.header.revision ?? '0';
      clusterId ||= res.header.cluster_id ?? '';
      const kvs = res.kvs ?? [];
      for (const kv of kvs) items.push(this.toKeyValue(kv));
      const last = kvs[kvs.length - 1];
      if (!res.more || !last) return { items, revision: Number(revision), clusterId };
      from = b64(Buffer.concat([unb64(last.key), Buffer.from([0])]));
    }
  }

  createIfAbsent(key: string, value: string, ttlSeconds?: number): Promise<number | false> {
    return this.putIf(key, { key: this.full(key), target: 'VERSION', result: 'EQUAL', version: '0' }, value, ttlSeconds);
  }

  replaceIfValue(key: string, expected: string, value: string, ttlSeconds?: number): Promise<number | false> {
    return this.putIf(key, { key: this.full(key), target: 'VALUE', result: 'EQUAL', value: b64(expected) }, value, ttlSeconds);
  }

  /**
   * A keepalive on the key's lease when the key holds `expected` on a lease of `ttlSeconds`: one
   * read and one keepalive, no raft write and no watch event. Otherwise (no lease, another TTL, or
   * the lease ran out between the read and the keepalive) a compare-and-swap rewrite.
   */
  async renew(key: string, expected: string, ttlSeconds: number): Promise<number | false> {
    const res = await this.read<RangeResponse>(`get ${key}`, '/v3/kv/range', { key: this.full(key) });
    const kv = res.kvs?.[0];
    if (!kv || unb64(kv.value).toString() !== expected) return false;
    if (kv.lease !== undefined && kv.lease !== '0') {
      // The keepalive endpoint is a stream: one request in, one answer out, then the gateway ends it.
      const alive = await this.read<{ result?: { TTL?: string } }>(`keep the lease of ${key} alive`, '/v3/lease/keepalive', { ID: kv.lease });
      if (Number(alive.result?.TTL ?? 0) === ttlSeconds) return Number(kv.mod_revision);
    }
    return this.replaceIfValue(key, expected, expected, ttlSeconds);
  }

  async deleteIfValue(key: string, expected: string): Promise<boolean> {
    const res = await this.write<TxnResponse>(`conditional delete ${key}`, '/v3/kv/txn', {
      compare: [{ key: this.full(key), target: 'VALUE', result: 'EQUAL', value: b64(expected) } satisfies Compare],
      success: [{ request_delete_range: { key: this.full(key) } } satisfies RequestOp],
    });
    return res.succeeded === true;
  }

  async put(key: string, value: string, ttlSeconds?: number): Promise<number> {
    const lease = ttlSeconds === undefined ? undefined : await this.grant(key, ttlSeconds);
    const res = await this.write<{ header: GatewayHeader }>(`put ${key}`, '/v3/kv/put', { key: this.full(key), value: b64(value), ...(lease && { lease }) });
    return Number(res.header.revision);
  }

  async delete(key: string): Promise<boolean> {
    const res = await this.write<{ deleted?: string }>(`delete ${key}`, '/v3/kv/deleterange', { key: this.full(key) });
    return Number(res.deleted ?? 0) > 0;
  }

  async writeMany(ops: WriteOp[]): Promise<number | false> {
    if (ops.length > MAX_WRITE_OPS) throw new StoreError('failed', `${ops.length} writes in one transaction; etcd takes at most ${MAX_WRITE_OPS}`);
    const res = await this.write<TxnResponse>(`write ${ops.length} keys`, '/v3/kv/txn', {
      compare: ops.filter((op) => op.type === 'create').map((op): Compare => ({ key: this.full(op.key), target: 'VERSION', result: 'EQUAL', version: '0' })),
      success: ops.map((op): RequestOp =>
        op.type === 'delete' ? { request_delete_range: { key: this.full(op.key) } } : { request_put: { key: this.full(op.key), value: b64(op.value) } },
      ),
    });
    return res.succeeded === true && Number(res.header.revision);
  }

  async watch(prefix: string, fromRevision: number, onEvent: (event: WatchEvent) => void, onError: (err: StoreError) => void): Promise<WatchHandle> {
    const start = Buffer.from(this.prefix + prefix);
    const body = { create_request: { key: b64(start), range_end: b64(prefixEnd(start)), start_revision: String(fromRevision) } };
    const what = `watch ${prefix}`;
    const failures: string[] = [];
    for (let i = 0; i < this.endpoints.length; i++) {
      const index = (this.current + i) % this.endpoints.length;
      try {
        const handle = await this.watchOn(this.endpoints[index]!, body, prefix, fromRevision, onEvent, onError);
        this.current = index;
        return handle;
      } catch (err) {
        if (!(err instanceof GatewayError) || !err.transient) throw this.toStoreError(what, err);
        failures.push(`${this.endpoints[index]}: ${err.message}`);
      }
    }
    throw new StoreError('unavailable', `etcd unreachable (${what}): ${failures.join('; ')}`);
  }

  private watchOn(
    endpoint: string,
    body: unknown,
    prefix: string,
    fromRevision: number,
    onEvent: (event: WatchEvent) => void,
    onError: (err: StoreError) => void,
  ): Promise<WatchHandle> {
    return new Promise((resolve, reject) => {
      let stopped = false;
      let created = false;
      const stop = (): void => {
        if (stopped) return;
        stopped = true;
        clearTimeout(timer);
        this.open.delete(req);
        req.destroy();
      };
      const fail = (err: Error): void => {
        if (stopped) return;
        const closing = this.closed;
        stop();
        if (!created) reject(err);
        else if (!closing) onError(err instanceof StoreError ? err : this.toStoreError(`watch ${prefix}`, err));
      };
      const req = this.send(endpoint, '/v3/watch', body);
      this.open.add(req);
      const timer = setTimeout(() => fail(new GatewayError(`did not accept a watch on ${prefix} within ${this.timeoutMs} ms`, true, true)), this.timeoutMs);
      req.on('error', (err) => fail(this.fromSocketError(err)));
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          readAll(res).then((text) => fail(answerError(res.statusCode, text)), fail);
          return;
        }
        let pending = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          pending += chunk;
          for (let nl = pending.indexOf('\n'); nl >= 0 && !stopped; nl = pending.indexOf('\n')) {
            const line = pending.slice(0, nl);
            pending = pending.slice(nl + 1);
            if (line.trim() === '') continue;
            let message: WatchMessage;
            try {
              message = JSON.parse(line) as WatchMessage;
            } catch {
              fail(new GatewayError(`${endpoint} sent a watch answer that is not JSON: ${line.slice(0, 120)}`, true, false));
              return;
            }
            handle(message);
          }
        });
        res.on('error', (err) => fail(this.fromSocketError(err)));
        res.on('close', () => fail(new GatewayError(`${endpoint} ended the watch on ${prefix}`, true, true)));
      });
      const handle = (message: WatchMessage): void => {
        if (message.error) {
          fail(grpcError(message.error.grpc_code, message.error.message ?? 'no message'));
          return;
        }
        const r = message.result ?? {};
        if (r.canceled) {
          const compactRevision = Number(r.compact_revision ?? 0);
          fail(
            compactRevision > 0
              ? new StoreError(
                  'compacted',
                  `watch on ${prefix} from revision ${fromRevision} failed: history before revision ${compactRevision} was compacted; list again`,
                  {
                    compactRevision,
                  },
                )
              : new StoreError('failed', `etcd cancelled the watch on ${prefix}: ${r.cancel_reason || 'no reason given'}`),
          );
          return;
        }
        if (r.created && !created) {
          created = true;
          clearTimeout(timer);
          resolve({
            stop: () => {
              stop();
              return Promise.resolve();
            },
          });
        }
        for (const event of r.events ?? []) {
          onEvent(this.toWatchEvent(event.type === 'DELETE' ? 'delete' : 'put', event.kv));
          if (stopped) return;
        }
      };
    });
  }

  /**
   * Healthy while the member the client reaches knows a leader (one status call, answered locally
   * by that member, no raft round). Otherwise every member is asked on its own, so the report tells
   * "no member answers" from "members answer but none has a leader" (no quorum: writes and
   * linearizable reads stop, while watches on a leaderless member just fall silent).
   */
  async health(): Promise<StoreHealthReport> {
    const leader = await this.read<{ leader?: string }>('status', '/v3/maintenance/status', {}).then(
      (r) => (r.leader ?? '0') !== '0',
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
    try {
      const r = (await this.post(endpoint, '/v3/maintenance/status', {}, Math.min(this.timeoutMs, 2000))) as { leader?: string };
      return { endpoint, answers: true, leader: (r.leader ?? '0') !== '0' };
    } catch (err) {
      return { endpoint, answers: false, error: (err as Error).message };
    }
  }

  close(): Promise<void> {
    this.closed = true;
    for (const req of this.open) req.destroy();
    this.open.clear();
    this.agent.destroy();
    return Promise.resolve();
  }

  private async putIf(key: string, compare: Compare, value: string, ttlSeconds: number | undefined): Promise<number | false> {
    const lease = ttlSeconds === undefined ? undefined : await this.grant(key, ttlSeconds);
    const res = await this.write<TxnResponse>(`conditional put ${key}`, '/v3/kv/txn', {
      compare: [compare],
      success: [{ request_put: { key: this.full(key), value: b64(value), ...(lease && { lease }) } } satisfies RequestOp],
    });
    // Only a definite "no" frees the lease early; after an error the write may have landed, so
    // the lease is left to expire by itself rather than risk deleting the key it now holds.
    if (res.succeeded !== true && lease) {
      await this.write('revoke a lease', '/v3/lease/revoke', { ID: lease }).catch(() => undefined);
    }
    return res.succeeded === true && Number(res.header.revision);
  }

  private async grant(key: string, ttlSeconds: number): Promise<string> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new StoreError('failed', `TTL for ${key} must be a whole number of seconds, at least 1 (got ${ttlSeconds})`);
    }
    const res = await this.write<{ ID: string }>(`grant lease for ${key}`, '/v3/lease/grant', { TTL: String(ttlSeconds) });
    return res.ID;
  }

  /** A request that changes nothing: any member may answer it, so any transient failure moves on to the next. */
  private read<T>(what: string, path: string, body: unknown): Promise<T> {
    return this.call(what, path, body, (e) => e.transient);
  }

  /** A write moves on to the next member only when it never reached this one: otherwise it may have landed. */
  private write<T>(what: string, path: string, body: unknown): Promise<T> {
    return this.call(what, path, body, (e) => e.transient && !e.sent);
  }

  /** One call within one deadline, starting at the member that answered last and moving on as `next` allows. */
  private async call<T>(what: string, path: string, body: unknown, next: (e: GatewayError) => boolean): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    const failures: string[] = [];
    for (let i = 0; i < this.endpoints.length; i++) {
      const index = (this.current + i) % this.endpoints.length;
      const endpoint = this.endpoints[index]!;
      const left = this.endpoints.length - i;
      // Each remaining member gets an equal share of the time left to connect in; the one that
      // connects may use all of it to answer.
      const remaining = Math.max(deadline - Date.now(), 1);
      try {
        const res = (await this.post(endpoint, path, body, remaining, left > 1 ? remaining / left : undefined)) as T;
        this.current = index;
        return res;
      } catch (err) {
        if (!(err instanceof GatewayError) || !next(err) || i === this.endpoints.length - 1) {
          const all = failures.length > 0 && err instanceof GatewayError ? `${failures.join('; ')}; ${endpoint}: ${err.message}` : undefined;
          throw this.toStoreError(what, err, all);
        }
        failures.push(`${endpoint}: ${err.message}`);
      }
    }
    throw new StoreError('failed', `etcd ${what}: no endpoint to ask`);
  }

  /** One JSON request to one member; resolves with its JSON answer, or rejects with a GatewayError. */
  private post(endpoint: string, path: string, body: unknown, timeoutMs: number, connectTimeoutMs?: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let connected = false;
      const req = this.send(endpoint, path, body);
      this.open.add(req);
      const done = (): void => {
        clearTimeout(timer);
        clearTimeout(connectTimer);
        this.open.delete(req);
      };
      const timer = setTimeout(
        () => req.destroy(new GatewayError(`${endpoint} did not answer within ${Math.round(timeoutMs)} ms (deadline exceeded)`, true, true)),
        timeoutMs,
      );
      const connectTimer =
        connectTimeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              if (!connected)
                req.destroy(
                  Object.assign(new Error(`no connection to ${endpoint} within ${Math.round(connectTimeoutMs)} ms`), { code: 'WEFT_CONNECT_TIMEOUT' }),
                );
            }, connectTimeoutMs);
      req.on('socket', (socket) => {
        if (!socket.connecting) connected = true;
        else socket.once('connect', () => (connected = true));
      });
      req.on('error', (err) => {
        done();
        reject(err instanceof GatewayError ? err : this.fromSocketError(err));
      });
      req.on('response', (res) => {
        readAll(res).then(
          (text) => {
            done();
            if (res.statusCode !== 200) {
              reject(answerError(res.statusCode, text));
              return;
            }
            // A streamed answer (lease keepalive) is one JSON object per line; the first is the answer.
            const first = text.split('\n', 1)[0]!;
            try {
              const parsed = JSON.parse(first) as { error?: { grpc_code?: number; message?: string } };
              if (parsed.error && typeof parsed.error === 'object') reject(grpcError(parsed.error.grpc_code, parsed.error.message ?? 'no message'));
              else resolve(parsed);
            } catch {
              reject(new GatewayError(`${endpoint} answered ${path} with something other than JSON: ${first.slice(0, 120)}`, true, false));
            }
          },
          (err: Error) => {
            done();
            reject(this.fromSocketError(err));
          },
        );
      });
    });
  }

  private send(endpoint: string, path: string, body: unknown): ClientRequest {
    const payload = JSON.stringify(body);
    const req = this.transport.request(`${endpoint}${path}`, {
      method: 'POST',
      agent: this.agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    });
    req.end(payload);
    return req;
  }

  private fromSocketError(err: Error & { code?: string }): GatewayError {
    const sent = !NOT_SENT.has(err.code ?? '');
    // TLS verification failures and refused client certificates are answers, not outages.
    const tls = /certificate|self.signed|SSL|TLS|handshake/i.test(`${err.code ?? ''} ${err.message}`);
    return new GatewayError(err.message || err.code || 'connection failed', sent, !tls, { cause: err });
  }

  private toStoreError(what: string, err: unknown, detail?: string): StoreError {
    if (err instanceof StoreError) return err;
    const message = detail ?? (err instanceof Error ? err.message : String(err));
    if (err instanceof GatewayError && err.transient) {
      return new StoreError('unavailable', `etcd unreachable at ${this.endpoints.join(', ')} (${what}): ${message}`, { cause: err });
    }
    return new StoreError('failed', `etcd ${what} failed: ${message}`, { cause: err });
  }

  private full(key: string): string {
    return b64(this.prefix + key);
  }

  private toKeyValue(kv: GatewayKv): KeyValue {
    return { key: this.relative(kv.key), value: unb64(kv.value).toString(), revision: Number(kv.mod_revision ?? 0) };
  }

  private toWatchEvent(type: 'put' | 'delete', kv: GatewayKv): WatchEvent {
    const key = this.relative(kv.key);
    const revision = Number(kv.mod_revision ?? 0);
    return type === 'put' ? { type: 'put', key, value: unb64(kv.value).toString(), revision } : { type: 'delete', key, revision };
  }

  private relative(key: string): string {
    return unb64(key).toString().slice(this.prefix.length);
  }
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('close', () => {
      if (!res.complete) reject(new Error('the connection closed in the middle of the answer'));
    });
  });
}

/** A non-200 answer: the gateway's body says `{"error", "message", "code"}` with the gRPC status code. */
function answerError(status: number | undefined, text: string): GatewayError {
  let parsed: { message?: string; code?: number } = {};
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    parsed = { message: text.slice(0, 200) };
  }
  return grpcError(parsed.code, parsed.message || `HTTP ${status}`);
}

function grpcError(code: number | undefined, message: string): GatewayError {
  return new GatewayError(message, true, code === GRPC_UNAVAILABLE || code === GRPC_DEADLINE_EXCEEDED);
}

function readTls(tls: EtcdTlsOptions): { ca: Buffer; cert?: Buffer; key?: Buffer } {
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new StoreError('failed', 'etcd TLS needs both certFile and keyFile (or neither)');
  }
  return {
    ca: readTlsFile('caFile', tls.caFile),
    ...(tls.certFile !== undefined && { cert: readTlsFile('certFile', tls.certFile) }),
    ...(tls.keyFile !== undefined && { key: readTlsFile('keyFile', tls.keyFile) }),
  };
}

function readTlsFile(field: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StoreError('failed', `cannot read etcd TLS ${field} ${path}: ${(err as Error).message}`, { cause: err });
  }
}
