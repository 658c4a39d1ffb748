import { rmSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { createBackend, type Backend, type DesiredState, type NodeInfo } from '../backend/index.js';
import type { DatapathStatus } from '../backend/types.js';
import { readActual, reconcile, teardown } from '../backend/reconcile.js';
import { serveCni } from '../cni/serve.js';
import { formatNetwork } from '../ip/cidr.js';
import { apply } from '../kernel/plan.js';
import { links, nftTable, routes } from '../kernel/state.js';
import { FAMILY, TABLE } from '../backend/firewall.js';
import { EtcdStore, type EtcdTlsOptions } from '../store/etcd.js';
import { isStoreUnavailable, type Store } from '../store/store.js';
import type { NetworkConfig } from '../subnet/config.js';
import { readSubnetEnv, writeSubnetEnv } from '../subnet/env.js';
import { CONFIG_KEY, LeaseError, LeaseManager, readNetworkConfig, subnetKey, type Lease, type LeaseEvent } from '../subnet/lease.js';
import type { Logger } from './log.js';
import { AgentError, discoverNode, stableVtepMac } from './node.js';

export interface AgentOptions {
  node: string;
  iface?: string;
  publicIP?: string;
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdTls?: EtcdTlsOptions;
  subnetFile: string;
  stateDir: string;
  leaseTtlSeconds?: number;
  resyncSeconds: number;
  cniSocket?: string;
  ipMasq: boolean;
  log: Logger;
}

export const STATUS_SOCKET = 'agent.sock';
export const STATUS_FILE = 'status.json';

export interface LeaseView {
  subnet: string;
  publicIP: string;
  backendType?: string;
  backendData?: unknown;
}

/** What `weft agent status` shows. */
export interface AgentStatus {
  node: string;
  pid: number;
  iface: string;
  publicIP: string;
  backend: string;
  network?: string;
  ownLease?: LeaseView;
  remoteLeases: LeaseView[];
  desired?: DesiredState;
  /** Differences between desired and the kernel when the status was taken; empty when in sync. */
  drift: string[];
  /** The exact commands the next reconcile would run for that drift (a dry run), when read live. */
  plan?: string;
  lastReconcile?: { at: string; changes: string[]; error?: string };
  /** The udp backend's packet loop: attached to its device, and its counters (drops included). */
  datapath?: DatapathStatus;
  store: { healthy: boolean; since: string };
  /** Where the data came from: a live query of the running agent, or its last state file. */
  source?: 'live' | 'file';
  at: string;
}

const view = (l: Lease): LeaseView => ({
  subnet: formatNetwork(l.subnet),
  publicIP: l.attrs.publicIP,
  ...(l.attrs.backendType !== undefined ? { backendType: l.attrs.backendType } : {}),
  ...(l.attrs.backendData !== undefined ? { backendData: l.attrs.backendData } : {}),
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The node agent. Flow: find the underlay interface and PublicIP → read the network config from
 * etcd → pick the backend → acquire this node's lease (flannel's order: lease with our PublicIP,
 * subnet.env's subnet, a random free one) → write subnet.env → list and watch every lease →
 * reconcile (desired state from the backend, actual state read from the kernel, apply the
 * difference) on every lease event and every --resync seconds → serve the CNI socket and status.
 * Everything happens in the namespace the process runs in; SIGTERM leaves the kernel state.
 */
export class Agent {
  private store!: Store;
  private config!: NetworkConfig;
  private backend!: Backend;
  private node!: NodeInfo;
  private leases: LeaseManager | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopped = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private pending: string | undefined;
  private statusServer: Server | undefined;
  private cniServer: Server | undefined;
  private lastDesired: DesiredState | undefined;
  private lastReconcile: AgentStatus['lastReconcile'];
  private readonly reported = new Set<string>();
  private lastError = '';
  private storeHealthy = true;
  private storeSince = new Date();
  private suppressed = 0;
  private failure: ((err: Error) => void) | undefined;
  readonly done: Promise<void>;

  constructor(private readonly o: AgentOptions) {
    this.done = new Promise<void>((_, reject) => {
      this.failure = reject;
    });
    this.done.catch(() => undefined);
  }

  private get log(): Logger {
    return this.o.log;
  }

  async start(): Promise<void> {
    const o = this.o;
    this.node = await discoverNode(o.node, o.iface, o.publicIP);
    this.log.info('starting', { node: o.node, iface: this.node.iface, publicIP: this.node.publicIP, mtu: this.node.ifaceMtu, etcd: o.etcdEndpoints.join(',') });
    this.store = new EtcdStore({ endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, ...(o.etcdTls ? { tls: o.etcdTls } : {}) });
    this.config = await this.untilDone('read the network config', () => readNetworkConfig(this.store));
    const existing = (await links(undefined)).find((l) => this.config.backend.type === 'vxlan' && l.ifname === `flannel.${this.config.backend.vni}`);
    this.backend = createBackend(this.config, this.node, stableVtepMac(o.stateDir, existing?.address), { log: (m, f) => this.log.info(m, f) });
    this.log.info('network config', { network: formatNetwork(this.config.network), subnetLen: this.config.subnetLen, backend: this.backend.type, podMtu: this.backend.mtu });

    let previous = undefined;
    try {
      previous = (await readSubnetEnv(o.subnetFile))?.subnet;
    } catch (err) {
      this.log.warn('ignoring unreadable subnet file', { file: o.subnetFile, error: (err as Error).message });
    }
    const own = await this.acquire(previous);
    await this.writeEnv(own);
    await this.follow();
    this.scheduleResync();
    await this.serveStatus();
    if (o.cniSocket) {
      this.cniServer = await serveCni(o.cniSocket, (m) => this.log.debug(`cni ${m}`));
      this.log.info('serving CNI', { socket: o.cniSocket });
    }
    this.log.info('running', { subnet: formatNetwork(own.subnet), resync: `${o.resyncSeconds}s` });
  }

  /** Stops following etcd and serving; leaves devices, routes, rules and the lease in place. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.resyncTimer);
    clearTimeout(this.retryTimer);
    this.unsubscribe?.();
    await this.leases?.stop();
    await this.running?.catch(() => undefined);
    await new Promise<void>((r) => (this.cniServer ? this.cniServer.close(() => r()) : r()));
    await new Promise<void>((r) => (this.statusServer ? this.statusServer.close(() => r()) : r()));
    rmSync(join(this.o.stateDir, STATUS_SOCKET), { force: true });
    await this.store?.close().catch(() => undefined);
    if (this.backend?.datapath) {
      await this.backend.datapath.close();
      this.log.info('stopped; devices, routes and the lease stay, but cross-node pod traffic pauses until the agent runs again (udp: the agent carries it)');
      return;
    }
    this.log.info('stopped; devices, routes and the lease stay so pod traffic keeps flowing');
  }

  /** Retries `fn` while the store is unreachable (or has no config yet), logging now and then. */
  private async untilDone<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let delay = 200;
    let logged = 0;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const retriable = isStoreUnavailable(err) || (err instanceof LeaseError && err.code === 'no-network-config');
        if (!retriable || this.stopped) throw err;
        if (Date.now() - logged > 30_000) {
          this.log.warn(`cannot ${what} yet; retrying`, { error: (err as Error).message });
          logged = Date.now();
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private async acquire(previous: Lease['subnet'] | undefined): Promise<Lease> {
    const leases = new LeaseManager({
      store: this.store,
      config: this.config,
      attrs: this.backend.leaseAttrs(),
      ...(previous ? { previousSubnet: previous } : {}),
      ...(this.o.leaseTtlSeconds !== undefined ? { ttlSeconds: this.o.leaseTtlSeconds } : {}),
    });
    this.leases = leases;
    const own = await this.untilDone('acquire a subnet lease', () => leases.acquire());
    this.log.info('lease acquired', { subnet: formatNetwork(own.subnet), publicIP: own.attrs.publicIP, key: subnetKey(own.subnet) });
    return own;
  }

  private async writeEnv(own: Lease): Promise<void> {
    await writeSubnetEnv(this.o.subnetFile, { network: this.config.network, subnet: own.subnet, mtu: this.backend.mtu, ipMasq: this.o.ipMasq });
    this.log.info('wrote subnet file', { file: this.o.subnetFile });
  }

  /** Lists every lease, then reconciles on every change. */
  private async follow(): Promise<void> {
    const leases = this.leases!;
    this.unsubscribe = leases.on((e) => this.onLeaseEvent(leases, e));
    await this.untilDone('list the leases', () => leases.watch());
    this.requestReconcile('initial');
  }

  private onLeaseEvent(leases: LeaseManager, e: LeaseEvent): void {
    if (leases !== this.leases || this.stopped) return;
    switch (e.type) {
      case 'added':
      case 'removed':
        this.storeUp();
        this.log.info(e.type === 'added' ? 'remote lease added' : 'remote lease removed', {
          subnet: formatNetwork(e.lease.subnet),
          publicIP: e.lease.attrs.publicIP,
        });
        this.requestReconcile(`lease ${e.type}`);
        return;
      case 'renewed':
        this.storeUp();
        this.log.debug('lease renewed', { subnet: formatNetwork(e.lease.subnet) });
        return;
      case 'error':
        this.storeDown(e.error);
        return;
      case 'lost':
        void this.onLost(e.lease, e.reason);
        return;
    }
  }

  /**
   * This node's lease was deleted or taken over by someone else.
   *
   * Deleted (by an operator, or expired while etcd was out of reach): take the same subnet back at
   * once. Every pod on this node has an address in it, and other nodes only see the lease vanish and
   * reappear, so traffic recovers without restarting anything. flanneld exits instead, which leaves
   * the node without a lease until a supervisor restarts it, and a restarted flanneld may pick a
   * different subnet, stranding every running pod.
   *
   * Taken (another node now holds the subnet), or the subnet is gone by the time we retry: exit
   * with an error. Continuing would give two nodes the same pod addresses; only an operator can
   * decide which node's pods to restart, and a silent switch to a new subnet would strand them.
   */
  private async onLost(lease: Lease, reason: 'deleted' | 'taken'): Promise<void> {
    const subnet = formatNetwork(lease.subnet);
    if (reason === 'taken') {
      this.fail(new AgentError('lease-taken', `this node's lease ${subnet} now belongs to another node; pods here hold addresses in it. Stop that node's agent or delete its lease, restart this node's pods, then restart this agent`));
      return;
    }
    this.log.warn('own lease was deleted by someone else; taking the same subnet back', { subnet });
    const old = this.leases;
    this.unsubscribe?.();
    await old?.stop();
    try {
      const own = await this.acquire(lease.subnet);
      if (own.subnet.base !== lease.subnet.base || own.subnet.prefix !== lease.subnet.prefix) {
        await this.store.delete(subnetKey(own.subnet)).catch(() => undefined);
        await this.leases?.stop();
        this.fail(new AgentError('lease-taken', `this node's subnet ${subnet} was taken by another node before it could be re-acquired; restart this node's pods and then this agent`));
        return;
      }
      await this.follow();
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private fail(err: Error): void {
    this.log.error(err.message, { code: (err as { code?: string }).code });
    this.failure?.(err);
  }

  private storeDown(err: Error): void {
    if (this.storeHealthy) {
      this.storeHealthy = false;
      this.storeSince = new Date();
      this.suppressed = 0;
      this.log.warn('etcd is unreachable; pod traffic is unaffected, retrying in the background', { error: err.message });
    } else {
      this.suppressed++;
      this.log.debug('etcd still unreachable', { error: err.message });
    }
  }

  private storeUp(): void {
    if (this.storeHealthy) return;
    const secs = ((Date.now() - this.storeSince.getTime()) / 1000).toFixed(1);
    this.storeHealthy = true;
    this.storeSince = new Date();
    this.log.info('etcd reachable again', { after: `${secs}s`, suppressedErrors: this.suppressed });
  }

  private scheduleResync(): void {
    if (this.stopped) return;
    this.resyncTimer = setTimeout(() => {
      this.requestReconcile('resync');
      if (!this.storeHealthy) {
        this.store.get(CONFIG_KEY).then(
          () => this.storeUp(),
          () => undefined,
        );
      }
      this.scheduleResync();
    }, this.o.resyncSeconds * 1000);
  }

  /** Runs a reconcile now, or right after the one in progress (requests coalesce). */
  requestReconcile(reason: string): void {
    if (this.stopped) return;
    if (this.running) {
      this.pending = this.pending ? this.pending : reason;
      return;
    }
    this.running = this.reconcileOnce(reason).finally(() => {
      this.running = undefined;
      const next = this.pending;
      this.pending = undefined;
      if (next) this.requestReconcile(next);
    });
  }

  private desired(): DesiredState | undefined {
    const own = this.leases?.ownLease;
    if (!own) return undefined;
    return this.backend.desired(own, this.leases!.remoteLeases(), { network: this.config.network, ipMasq: this.o.ipMasq });
  }

  private async reconcileOnce(reason: string): Promise<void> {
    const desired = this.desired();
    if (!desired) return;
    this.lastDesired = desired;
    // Each skipped lease is reported once (and again if it comes back after being fixed).
    const now = new Set(desired.skipped.map((s) => `${s.subnet}|${s.publicIP}|${s.reason}`));
    for (const s of desired.skipped) {
      if (!this.reported.has(`${s.subnet}|${s.publicIP}|${s.reason}`)) this.log.warn('not routing to a remote subnet', { subnet: s.subnet, publicIP: s.publicIP, reason: s.reason });
    }
    this.reported.clear();
    for (const k of now) this.reported.add(k);
    const at = new Date().toISOString();
    try {
      const actual = await readActual(undefined, desired);
      const { plan, changes } = reconcile(undefined, desired, actual);
      if (!plan.empty) {
        const started = performance.now();
        await apply(plan);
        for (const c of changes) this.log.info(c, { reason });
        this.log.debug('applied', { ops: plan.ops.length, ms: (performance.now() - started).toFixed(1) });
      }
      // The udp packet loop: attach to the device (which exists now) and load the peer table.
      if (desired.udp && this.backend.datapath) await this.backend.datapath.sync(desired.udp);
      this.lastReconcile = { at, changes };
      if (this.lastError) this.log.info('reconcile succeeded again');
      this.lastError = '';
    } catch (err) {
      const message = (err as Error).message;
      this.lastReconcile = { at, changes: [], error: message };
      if (message !== this.lastError) this.log.error('reconcile failed; retrying', { reason, error: message });
      this.lastError = message;
      clearTimeout(this.retryTimer);
      if (!this.stopped) this.retryTimer = setTimeout(() => this.requestReconcile('retry'), 2000);
    }
    this.writeStatusFile(await this.status(false));
  }

  /** The status; `live` re-reads the kernel to show the drift from desired state right now. */
  async status(live: boolean): Promise<AgentStatus> {
    const own = this.leases?.ownLease;
    const desired = live ? (this.desired() ?? this.lastDesired) : this.lastDesired;
    let drift: string[] = [];
    let plan: string | undefined;
    if (live && desired) {
      const r = reconcile(undefined, desired, await readActual(undefined, desired));
      drift = r.changes;
      if (!r.plan.empty) plan = r.plan.render();
    } else if (this.lastReconcile?.error) {
      drift = [`last reconcile failed: ${this.lastReconcile.error}`];
    }
    return {
      node: this.o.node,
      pid: process.pid,
      iface: this.node.iface,
      publicIP: this.node.publicIP,
      backend: this.backend?.type ?? this.config?.backend.type ?? 'unknown',
      ...(this.config ? { network: formatNetwork(this.config.network) } : {}),
      ...(own ? { ownLease: view(own) } : {}),
      remoteLeases: (this.leases?.remoteLeases() ?? []).map(view).sort((a, b) => a.subnet.localeCompare(b.subnet, 'en', { numeric: true })),
      ...(desired ? { desired } : {}),
      drift,
      ...(plan ? { plan } : {}),
      ...(this.lastReconcile ? { lastReconcile: this.lastReconcile } : {}),
      ...(this.backend?.datapath ? { datapath: this.backend.datapath.status() } : {}),
      store: { healthy: this.storeHealthy, since: this.storeSince.toISOString() },
      source: live ? 'live' : 'file',
      at: new Date().toISOString(),
    };
  }

  private writeStatusFile(status: AgentStatus): void {
    try {
      mkdirSync(this.o.stateDir, { recursive: true });
      const file = join(this.o.stateDir, STATUS_FILE);
      writeFileSync(`${file}.tmp`, `${JSON.stringify(status, null, 2)}\n`);
      renameSync(`${file}.tmp`, file);
    } catch (err) {
      this.log.warn('cannot write the status file', { error: (err as Error).message });
    }
  }

  /** A unix socket in the state dir: connect, and the agent answers with its live status as JSON. */
  private async serveStatus(): Promise<void> {
    const path = join(this.o.stateDir, STATUS_SOCKET);
    mkdirSync(this.o.stateDir, { recursive: true });
    rmSync(path, { force: true });
    const server = createServer((sock) => {
      sock.on('error', () => undefined);
      this.status(true).then(
        (s) => sock.end(`${JSON.stringify(s)}\n`),
        (err: Error) => sock.end(`${JSON.stringify({ error: err.message })}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    this.statusServer = server;
  }
}

/**
 * `weft agent --cleanup`: removes what the agent programmed in this namespace (its VXLAN devices
 * with their neighbours and fdb entries, its routes, its nftables table) and, when etcd is given,
 * gives up this node's lease (only if it still carries this node's PublicIP) so other nodes drop
 * their routes to it at once. subnet.env stays, so a later start asks for the same subnet again.
 */
export async function cleanup(
  subnetFile: string,
  log: Logger,
  lease?: { etcd: { endpoints: string[]; prefix: string; tls?: EtcdTlsOptions }; iface?: string; publicIP?: string; node: string },
): Promise<string[]> {
  const env = await readSubnetEnv(subnetFile).catch(() => undefined);
  const [linkList, routeList, table] = await Promise.all([links(undefined), routes(undefined), nftTable(undefined, FAMILY, TABLE)]);
  const network = env ? formatNetwork(env.network) : '0.0.0.0/32';
  const own = env ? formatNetwork(env.subnet) : '0.0.0.0/32';
  if (!env) log.warn(`no readable ${subnetFile}: removing devices and the nftables table, but not routes (which need the network from it)`);
  const { plan, changes } = teardown(undefined, network, own, { links: linkList, routes: env ? routeList : [], ...(table ? { table } : {}) });
  await apply(plan);
  for (const c of changes) log.info(c);
  if (lease && env) {
    const store = new EtcdStore({ endpoints: lease.etcd.endpoints, prefix: lease.etcd.prefix, timeoutMs: 3000, ...(lease.etcd.tls ? { tls: lease.etcd.tls } : {}) });
    try {
      const node = await discoverNode(lease.node, lease.iface, lease.publicIP).catch(() => undefined);
      const key = subnetKey({ ...env.subnet, ip: env.subnet.base });
      const kv = await store.get(key);
      const holder = kv ? (JSON.parse(kv.value) as { PublicIP?: string }).PublicIP : undefined;
      if (kv && node && holder === node.publicIP && (await store.replaceIfValue(key, kv.value, kv.value, 1)) !== false) {
        await store.delete(key);
        changes.push(`release lease ${key}`);
        log.info('released lease', { key });
      } else if (kv) {
        log.info('lease not released: it does not carry this node\'s PublicIP', { key, holder });
      }
    } catch (err) {
      log.warn('could not release the lease; it expires with its TTL', { error: (err as Error).message });
    } finally {
      await store.close().catch(() => undefined);
    }
  }
  return changes;
}
