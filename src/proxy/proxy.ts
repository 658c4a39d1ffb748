import type { Logger } from '../agent/log.js';
import type { Netns } from '../kernel/exec.js';
import type { RegistryEvent } from '../service/cache.js';
import { endpointsOf, servicesSelecting } from '../service/endpoints.js';
import { serviceKey, type EndpointSliceRecord, type PodRecord, type Service } from '../service/types.js';
import { serviceRules, type Fragment, type ProxyNode } from './rules.js';
import { ProxyTable, type SyncResult } from './table.js';

export { cleanupProxy } from './table.js';
export { PROXY_TABLE, PROXY_TABLES, PROXY_FAMILY, serviceTable, serviceRules, desiredRuleset, type ProxyNode, type Fragment } from './rules.js';
export { diff, shapeOf, toNftTx, type ProxyOp } from './diff.js';

/** What the proxy reads: RegistryCache's maps and events. */
export interface ProxySource {
  readonly services: Map<string, Service>;
  readonly pods: Map<string, PodRecord>;
  readonly slices: Map<string, EndpointSliceRecord>;
  on(listener: (e: RegistryEvent) => void): () => unknown;
}

export interface ProxyOptions {
  node: ProxyNode;
  cache: ProxySource;
  /** Whether a pod IP is on a node that holds a lease (endpoints on gone nodes are left out). */
  live: (ip: string) => boolean;
  log: Logger;
  ns?: Netns;
  /** After each sync: its kind, time, kernel changes and, for a full sync after the first, the drift it repaired. */
  synced?(s: { kind: 'incremental' | 'full' | 'unchanged'; seconds: number; changes: number; repaired: number }): void;
  /** A transaction failed (a full sync follows). */
  failed?(): void;
}

export interface ProxyStatus {
  services: number;
  endpoints: number;
  chains: number;
  rules: number;
  /** The last transaction (incremental or full). */
  lastSync?: { at: string; ms: number; reason: string; changes: number; transactions: number };
  lastFullSync?: { at: string; ms: number };
  /** The last failure, until a full sync succeeds. */
  error?: string;
}

/** Services recomputed one by one above this many per batch share one index of pods and slices instead. */
const INDEX_ABOVE = 20;
const RETRY_MIN_MS = 500;
const PERIODIC = 'resync';
const RETRY_MAX_MS = 30_000;

type View = (svc: Service) => { pods: Iterable<PodRecord>; slices: Iterable<EndpointSliceRecord> };

/**
 * The service proxy of one node: keeps the `weft-proxy` nftables table equal to what the
 * registry says. Events mark Services dirty (a Service change: that one; a pod: the Services that
 * select it before or after; a slice: its Service); dirty Services are recomputed and applied as
 * one transaction, and whatever arrives meanwhile goes into the next one. A full sync reads the
 * kernel's table and repairs it. Rules stay in place when the proxy stops.
 */
export class ServiceProxy {
  private readonly table: ProxyTable;
  private readonly dirty = new Set<string>();
  private full: string | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private retryMs = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Liveness last seen per endpoint IP, so leasesChanged() finds what changed. */
  private readonly liveness = new Map<string, boolean>();
  private last: ProxyStatus['lastSync'];
  private lastFull: ProxyStatus['lastFullSync'];
  private error: string | undefined;
  private unsubscribe: (() => unknown) | undefined;

  constructor(private readonly opts: ProxyOptions) {
    this.table = new ProxyTable(opts.ns);
  }

  /** Subscribes to the cache (already started and synced) and makes the full first sync. */
  async start(): Promise<void> {
    this.unsubscribe = this.opts.cache.on((e) => this.onEvent(e));
    await this.resync('start');
  }

  /**
   * A full sync (repairs drift); resolves when the proxy is idle again. The periodic one (no
   * reason given) first asks the kernel's nftables generation: when nothing but the proxy changed
   * nftables since its last transaction, nothing can have drifted and it stops there.
   */
  async resync(reason?: string): Promise<void> {
    this.full = reason ?? PERIODIC;
    await this.kick();
  }

  /** Leases came or went: recompute the Services whose endpoints' liveness changed. */
  leasesChanged(): void {
    const changed = new Set<string>();
    for (const [ip, was] of this.liveness) if (this.opts.live(ip) !== was) changed.add(ip);
    if (changed.size === 0) return;
    const services = [...this.opts.cache.services.values()];
    for (const pod of this.opts.cache.pods.values())
      if (pod.ip !== undefined && changed.has(pod.ip)) for (const s of servicesSelecting(pod, services)) this.dirty.add(serviceKey(s));
    for (const s of this.opts.cache.slices.values())
      if (s.endpoints.some((e) => e.addresses.some((a) => changed.has(a)))) this.dirty.add(`${s.namespace}/${s.serviceName}`);
    void this.kick();
  }

  /** Stops reacting to events; the table stays as it is (connections keep working). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.retryTimer);
    await this.running;
  }

  status(): ProxyStatus {
    return {
      ...this.table.totals,
      ...(this.last ? { lastSync: this.last } : {}),
      ...(this.lastFull ? { lastFullSync: this.lastFull } : {}),
      ...(this.error ? { error: this.error } : {}),
    };
  }

  private onEvent(e: RegistryEvent): void {
    if (this.stopped) return;
    if (e.kind === 'resync') {
      this.full = 'registry re-listed';
    } else if (e.kind === 'service') {
      this.dirty.add(e.key);
    } else if (e.kind === 'pod') {
      const services = [...this.opts.cache.services.values()];
      for (const p of [e.old, e.now] as (PodRecord | undefined)[]) if (p) for (const s of servicesSelecting(p, services)) this.dirty.add(serviceKey(s));
    } else if (e.kind === 'slice') {
      for (const s of [e.old, e.now] as (EndpointSliceRecord | undefined)[]) if (s) this.dirty.add(`${s.namespace}/${s.serviceName}`);
    }
    void this.kick();
  }

  /** Runs the sync loop unless it runs already; resolves when it is idle. */
  private kick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.running ??= this.loop().finally(() => (this.running = undefined));
    return this.running;
  }

  private async loop(): Promise<void> {
    // Events that arrive together (one watch response) go into one transaction.
    await new Promise((resolve) => setImmediate(resolve));
    while (!this.stopped && (this.full !== undefined || (this.dirty.size > 0 && this.retryTimer === undefined))) {
      const started = performance.now();
      const full = this.full;
      const keys = [...this.dirty];
      this.full = undefined;
      this.dirty.clear();
      try {
        if (full !== undefined) await this.fullSync(full, started, keys);
        else await this.incremental(keys, started);
        this.retryMs = 0;
      } catch (e) {
        this.fail(e, full ?? `${keys.length} services changed`);
      }
    }
  }

  /** `dirty`: Services changed meanwhile; a periodic sync that stops at an unchanged generation still applies them. */
  private async fullSync(reason: string, started: number, dirty: string[]): Promise<void> {
    if (reason === PERIODIC && (await this.table.unchanged())) {
      if (dirty.length) return this.incremental(dirty, started);
      this.record(`${reason}: nftables unchanged`, performance.now() - started, { ops: 0, transactions: 0, changes: [], conntrackDeleted: 0 }, 'unchanged');
      return;
    }
    const all = new Map<string, Fragment>();
    this.liveness.clear();
    const view = this.index();
    for (const [key, svc] of this.opts.cache.services) {
      all.set(key, this.compute(svc, view));
      if (all.size % 2000 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const r = await this.table.sync(all);
    const ms = performance.now() - started;
    this.error = undefined;
    this.lastFull = { at: new Date().toISOString(), ms: Math.round(ms) };
    this.record(reason, ms, r, 'full');
    if (r.changes.length && reason !== 'start') this.opts.log.warn('service proxy repaired drift', { changes: r.changes });
    this.opts.log.info('service proxy full sync', { reason, services: all.size, ops: r.ops, transactions: r.transactions, ms: Math.round(ms) });
  }

  private async incremental(keys: string[], started: number): Promise<void> {
    const view = keys.length > INDEX_ABOVE ? this.index() : this.scan();
    const changed = new Map<string, Fragment | undefined>();
    for (const key of keys) {
      const svc = this.opts.cache.services.get(key);
      changed.set(key, svc ? this.compute(svc, view) : undefined);
    }
    const r = await this.table.update(changed);
    const ms = performance.now() - started;
    this.record(`${keys.length === 1 ? keys[0] : `${keys.length} services`} changed`, ms, r, 'incremental');
    const named = keys.length === 1 ? { service: keys[0] } : { services: keys.length };
    this.opts.log.info('service rules updated', { ...named, ops: r.ops, conntrackDeleted: r.conntrackDeleted, ms: Math.round(ms) });
  }

  private record(reason: string, ms: number, r: SyncResult, kind: 'incremental' | 'full' | 'unchanged'): void {
    this.last = { at: new Date().toISOString(), ms: Math.round(ms), reason, changes: r.ops + r.conntrackDeleted, transactions: r.transactions };
    const repaired = kind === 'full' && reason !== 'start' ? r.changes.length : 0;
    this.opts.synced?.({ kind, seconds: ms / 1000, changes: r.ops + r.conntrackDeleted, repaired });
    if (r.conntrackError) this.opts.log.warn('service proxy could not delete stale UDP conntrack entries', { error: r.conntrackError });
  }

  /** A failed transaction changed nothing; a full sync (which reads the kernel) follows, with backoff. */
  private fail(e: unknown, what: string): void {
    const msg = e instanceof Error ? e.message : String(e);
    this.error = msg;
    this.opts.failed?.();
    this.retryMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.retryMs * 2));
    this.opts.log.error('service proxy sync failed; full sync follows', { what, error: msg, retryMs: this.retryMs });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.full ??= 'retry after failure';
      void this.kick();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  private compute(svc: Service, view: View): Fragment {
    const live = (ip: string): boolean => {
      const l = this.opts.live(ip);
      this.liveness.set(ip, l);
      return l;
    };
    return serviceRules(this.opts.node, svc, endpointsOf(svc, view(svc), live));
  }

  /** For a few Services: the cache's pods and slices as they are. */
  private scan(): View {
    return () => ({ pods: this.opts.cache.pods.values(), slices: this.opts.cache.slices.values() });
  }

  /** For many: pods by namespace and one selector label, slices by Service, built once. */
  private index(): View {
    const pods = new Map<string, PodRecord[]>();
    const add = (k: string, p: PodRecord) => {
      const list = pods.get(k);
      if (list) list.push(p);
      else pods.set(k, [p]);
    };
    for (const p of this.opts.cache.pods.values()) {
      add(p.namespace, p);
      for (const [k, v] of Object.entries(p.labels)) add(`${p.namespace}\0${k}=${v}`, p);
    }
    const slices = new Map<string, EndpointSliceRecord[]>();
    for (const s of this.opts.cache.slices.values()) {
      const k = `${s.namespace}/${s.serviceName}`;
      const list = slices.get(k);
      if (list) list.push(s);
      else slices.set(k, [s]);
    }
    return (svc) => {
      const first = Object.entries(svc.selector ?? {})[0];
      return {
        pods: (first ? pods.get(`${svc.namespace}\0${first[0]}=${first[1]}`) : svc.selector ? pods.get(svc.namespace) : undefined) ?? [],
        slices: slices.get(serviceKey(svc)) ?? [],
      };
    };
  }
}
