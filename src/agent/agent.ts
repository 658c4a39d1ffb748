import type { Server as HttpServer } from 'node:http';
import type { Server } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createBackend, type Backend, type DesiredState, type NodeInfo } from '../backend/index.js';
import { FAMILY, FORGED_COUNTER, TABLE } from '../backend/firewall.js';
import { applied, changeKind, concernsNetlinkPart, readActual, reconcile, sameKernel, type ActualState, type NetlinkPart } from '../backend/reconcile.js';
import { resultIp, serveCni, type CniHooks } from '../cni/serve.js';
import { formatNetwork } from '../ip/cidr.js';
import { apply } from '../kernel/plan.js';
import { links, nftTable } from '../kernel/state.js';
import { RtnlChanges } from '../kernel/watch.js';
import { EtcdStore, type EtcdTlsOptions } from '../store/etcd.js';
import { isStoreUnavailable, type Store } from '../store/store.js';
import type { NetworkConfig } from '../subnet/config.js';
import { readSubnetEnv, writeSubnetEnv } from '../subnet/env.js';
import { CONFIG_KEY, LeaseError, readNetworkConfig, subnetKey, type Lease } from '../subnet/lease.js';
import { LeaseManager, type LeaseEvent } from '../subnet/manager.js';
import { dryRunReport } from './dry-run.js';
import { StoreHealth } from './health.js';
import type { Fields, Logger } from './log.js';
import { AgentMetrics, triggerOf, type ReconcileTrigger } from './metrics.js';
import { AgentError, checkNetworkForNode, discoverNode, stableVtepMac } from './node.js';
import { ReconcileScheduler } from './scheduler.js';
import { removeNodeDns } from './dns.js';
import { AgentServices, podOfCniArgs, type NodeDnsOptions } from './services.js';
import { leaseView, serveStatus, STATUS_SOCKET, writeStatusFile, type AgentStatus } from './status.js';

export interface AgentOptions {
  node: string;
  iface?: string;
  publicIP?: string;
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdTls?: EtcdTlsOptions;
  /** Where Services and pods live in etcd (Weft's own prefix, default /weft). */
  registryPrefix: string;
  subnetFile: string;
  stateDir: string;
  leaseTtlSeconds?: number;
  resyncSeconds: number;
  cniSocket?: string;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics (off when absent). */
  metricsListen?: { host: string; port: number };
  ipMasq: boolean;
  /** Serve the cluster DNS on this node (absent: --no-dns; a DNS device left from before is removed, so queries take the kube-dns Service). */
  dns?: NodeDnsOptions;
  /** Make other tables' forward hooks pass the pod Network (default true). */
  forwardRules?: boolean;
  /** Print the lease it would take or keep and the first reconcile's plan; change nothing. */
  dryRun?: boolean;
  /** Where the dry run's report goes (default: stdout). */
  out?: (text: string) => void;
  log: Logger;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const RECONCILE_RETRY_MS = 2000;
const STATUS_FILE_MS = 5000;
/** A resync reads netlink at least this often, notifications or not. */
const FULL_READ_EVERY = 6;

/**
 * Subnets in numeric order. One collator for every status: localeCompare with options builds one per
 * comparison (8 ms to sort 100 leases), and the status is written after every reconcile.
 */
const bySubnet = new Intl.Collator('en', { numeric: true });

/**
 * The node agent. Flow: find the underlay interface and PublicIP → read the network config from
 * etcd (and refuse one that contains this node's address) → pick the backend → acquire this
 * node's lease (flannel's order: lease with our PublicIP, subnet.env's subnet, a random free one)
 * → write subnet.env → list every lease → the first reconcile (desired state from the backend,
 * actual state read from the kernel, apply the difference) → reconcile on every lease event and
 * every --resync seconds → serve the CNI socket and status.
 *
 * No reconcile runs before the full lease list is in: a partial list would remove routes to the
 * nodes not listed yet, and the kernel keeps the previous run's routes meanwhile, so traffic
 * survives a restart. Everything happens in the namespace the process runs in; SIGTERM leaves the
 * kernel state and the lease.
 */
export class Agent {
  private store!: Store;
  private config!: NetworkConfig;
  private backend!: Backend;
  private node!: NodeInfo;
  private leases: LeaseManager | undefined;
  private services: AgentServices | undefined;
  private readonly scheduler: ReconcileScheduler;
  private readonly health: StoreHealth;
  private stopped = false;
  private statusServer: Server | undefined;
  private cniServer: Server | undefined;
  private metricsServer: HttpServer | undefined;
  readonly metrics: AgentMetrics;
  private lastDesired: DesiredState | undefined;
  /** The desired state (as JSON) the last run left the kernel in, while `known` follows that run. */
  private settled: string | undefined;
  /** The kernel's state as the last reconcile left it, when its plan was one applied() can follow. */
  private known: ActualState | undefined;
  /** Notifications of this namespace's links, addresses, routes and neighbours (undefined: none, every resync reads). */
  private changes: RtnlChanges | undefined;
  /** A notification that may concern the agent's netlink state came since the last netlink read. */
  private netlinkDirty = true;
  /** Resyncs since the last netlink read that took `known`'s netlink part instead. */
  private quietResyncs = 0;
  private lastReconcile: AgentStatus['lastReconcile'];
  private readonly reported = new Set<string>();
  private lastError = '';
  private statusFileTimer: NodeJS.Timeout | undefined;
  private failure: ((err: Error) => void) | undefined;
  readonly done: Promise<void>;

  constructor(private readonly o: AgentOptions) {
    this.done = new Promise<void>((_, reject) => {
      this.failure = reject;
    });
    this.done.catch(() => undefined);
    this.health = new StoreHealth(o.log);
    this.metrics = new AgentMetrics({
      node: o.node,
      backend: () => this.backend?.type,
      ownLease: () => {
        const own = this.leases?.ownLease;
        return own && { subnet: formatNetwork(own.subnet), publicIP: own.attrs.publicIP };
      },
      remoteLeases: () => this.leases?.remoteLeases().length ?? 0,
      etcdHealthy: () => this.health.healthy,
      datapath: () => this.backend?.datapath?.status(),
      services: () => this.services?.status(),
      forged: async () => (this.backend?.type === 'vxlan' ? (await nftTable(undefined, FAMILY, TABLE))?.counters.get(FORGED_COUNTER) : undefined),
    });
    this.scheduler = new ReconcileScheduler((reason) => this.reconcileOnce(reason), {
      resyncMs: o.resyncSeconds * 1000,
      retryMs: RECONCILE_RETRY_MS,
      onResync: () => {
        this.probeStore();
        this.services?.resync();
      },
    });
  }

  private get log(): Logger {
    return this.o.log;
  }

  /** Starts the agent; when that fails, what was started is stopped again before the error is thrown. */
  async start(): Promise<void> {
    try {
      await this.run();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private async run(): Promise<void> {
    const o = this.o;
    if (o.dryRun) {
      (o.out ?? ((t: string) => process.stdout.write(`${t}\n`)))(await dryRunReport(o));
      return;
    }
    if (o.metricsListen) {
      this.metricsServer = await this.metrics.serve(o.metricsListen);
      const { host, port } = o.metricsListen;
      this.log.info('serving metrics', { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/metrics` });
    }
    this.node = await discoverNode(o.node, o.iface, o.publicIP, (m, f) => this.log.warn(m, f));
    this.log.info('starting', { node: o.node, iface: this.node.iface, publicIP: this.node.publicIP, mtu: this.node.ifaceMtu, etcd: o.etcdEndpoints.join(',') });
    this.store = new EtcdStore({ endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, ...(o.etcdTls ? { tls: o.etcdTls } : {}) });
    this.config = await this.untilDone('read the network config', () => readNetworkConfig(this.store));
    checkNetworkForNode(this.config, this.node);
    this.backend = await this.createBackend();
    this.log.info('network config', {
      network: formatNetwork(this.config.network),
      subnetLen: this.config.subnetLen,
      backend: this.backend.type,
      podMtu: this.backend.mtu,
    });

    let previous = undefined;
    try {
      previous = (await readSubnetEnv(o.subnetFile))?.subnet;
    } catch (err) {
      this.log.warn('ignoring unreadable subnet file', { file: o.subnetFile, error: (err as Error).message });
    }
    const leases = new LeaseManager({
      store: this.store,
      config: this.config,
      attrs: this.backend.leaseAttrs(),
      ...(previous ? { previousSubnet: previous } : {}),
      ...(o.leaseTtlSeconds !== undefined ? { ttlSeconds: o.leaseTtlSeconds } : {}),
    });
    this.leases = leases;
    leases.on((e) => this.onLeaseEvent(e));
    const own = await this.untilDone('acquire a subnet lease', () => leases.acquire());
    this.log.info('lease acquired', { subnet: formatNetwork(own.subnet), publicIP: own.attrs.publicIP, lease: subnetKey(own.subnet) });
    await writeSubnetEnv(o.subnetFile, { network: this.config.network, subnet: own.subnet, mtu: this.backend.mtu, ipMasq: o.ipMasq });
    this.log.info('wrote subnet file', { file: o.subnetFile });
    await this.untilDone('list the leases', () => leases.watch());
    try {
      this.changes = RtnlChanges.open(undefined);
    } catch (err) {
      this.log.warn('cannot follow netlink notifications; every resync reads the kernel', { error: (err as Error).message });
    }
    this.scheduler.start('initial');
    const services = new AgentServices({
      node: o.node,
      network: this.config.network,
      etcd: { endpoints: o.etcdEndpoints, prefix: o.registryPrefix, ...(o.etcdTls ? { tls: o.etcdTls } : {}) },
      leases: () => [...(leases.ownLease ? [leases.ownLease] : []), ...leases.remoteLeases()],
      ...(o.dns ? { dns: o.dns } : {}),
      log: this.log,
      metrics: this.metrics,
    });
    if (!o.dns) for (const c of await removeNodeDns(undefined)) this.log.info(`--no-dns: ${c}`);
    this.services = services;
    // In the background: routes, CNI and status do not wait for the registry or the first proxy sync.
    services.start().catch((err: Error) => this.fail(new AgentError('fatal', `the service proxy cannot start: ${err.message}`)));
    this.statusServer = await serveStatus(o.stateDir, () => this.status(true));
    if (o.cniSocket) {
      this.cniServer = await serveCni(o.cniSocket, (m) => this.log.debug(`cni ${m}`), { ...services.cniHooks(), answered: (r) => this.cniAnswered(r) });
      this.log.info('serving CNI', { socket: o.cniSocket });
    }
    this.log.info('running', { subnet: formatNetwork(own.subnet), resync: `${o.resyncSeconds}s` });
  }

  /** Stops following etcd and serving; leaves devices, routes, rules and the lease in place. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.leases?.stop();
    await this.scheduler.stop();
    this.changes?.close();
    if (this.statusFileTimer) {
      clearTimeout(this.statusFileTimer);
      this.statusFileTimer = undefined;
      await this.writeStatus();
    }
    await this.services?.stop();
    await new Promise<void>((r) => (this.cniServer ? this.cniServer.close(() => r()) : r()));
    await new Promise<void>((r) => (this.statusServer ? this.statusServer.close(() => r()) : r()));
    await new Promise<void>((r) => (this.metricsServer ? this.metricsServer.close(() => r()) : r()));
    if (this.statusServer) rmSync(join(this.o.stateDir, STATUS_SOCKET), { force: true });
    await this.store?.close().catch(() => undefined);
    if (!this.backend) return;
    if (this.backend.datapath) {
      await this.backend.datapath.close();
      this.log.info('stopped; devices, routes and the lease stay, but cross-node pod traffic pauses until the agent runs again (udp: the agent carries it)');
      return;
    }
    this.log.info('stopped; devices, routes, service rules and the lease stay so pod traffic keeps flowing');
  }

  /**
   * The backend the config names, with a VtepMAC that survives restarts: the one saved in the
   * state dir, else (taking over from flanneld) the MAC of the device the backend would program.
   */
  private async createBackend(): Promise<Backend> {
    const device = createBackend(this.config, this.node, '', { datapath: false }).device;
    const existing = device === undefined ? undefined : (await links(undefined)).find((l) => l.name === device)?.mac;
    return createBackend(this.config, this.node, stableVtepMac(this.o.stateDir, existing), { log: (m, f) => this.log.info(m, f) });
  }

  /** Retries `fn` while the store is unreachable (or has no config yet), logging now and then. */
  private async untilDone<T>(what: string, fn: () => Promise<T>): Promise<T> {
    // From 50 ms: an agent started with etcd (lab up) finds the network config moments after etcd serves.
    let delay = 50;
    let logged = 0;
    for (;;) {
      try {
        const result = await fn();
        this.health.up();
        return result;
      } catch (err) {
        const retriable = isStoreUnavailable(err) || (err instanceof LeaseError && err.code === 'no-network-config');
        if (!retriable || this.stopped) throw err;
        if (isStoreUnavailable(err)) this.health.down(err as Error);
        if (Date.now() - logged > 30_000) {
          this.log.warn(`cannot ${what} yet; retrying`, { error: (err as Error).message });
          logged = Date.now();
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private onLeaseEvent(e: LeaseEvent): void {
    if (this.stopped) return;
    switch (e.type) {
      case 'added':
      case 'removed':
        this.health.up();
        this.log.info(e.type === 'added' ? 'remote lease added' : 'remote lease removed', {
          subnet: formatNetwork(e.lease.subnet),
          publicIP: e.lease.attrs.publicIP,
        });
        this.scheduler.request(`lease ${e.type}`);
        this.services?.leasesChanged();
        return;
      case 'renewed':
        this.health.up();
        this.metrics.leaseRenewals.inc();
        this.log.debug('lease renewed', { subnet: formatNetwork(e.lease.subnet) });
        return;
      case 'reasserted':
        this.health.up();
        this.metrics.leaseReasserts.inc({ why: e.why });
        if (e.why === 'deleted') this.log.warn('own lease was deleted by someone else; taking the same subnet back', { subnet: formatNetwork(e.lease.subnet) });
        else this.log.warn("wrote this node's lease back into the reset store", { subnet: formatNetwork(e.lease.subnet) });
        return;
      case 'reset':
        this.health.wasReset(e.reason);
        this.metrics.etcdResets.inc();
        this.log.warn("etcd lost its data or is another cluster; writing this node's lease back and listing again", { reason: e.reason });
        void this.checkConfigAfterReset();
        return;
      case 'lost':
        this.fail(
          new AgentError(
            'lease-taken',
            `this node's lease ${formatNetwork(e.lease.subnet)} now belongs to another node; pods here hold addresses in it. Stop that node's agent or delete its lease, restart this node's pods, then restart this agent`,
          ),
        );
        return;
      case 'error':
        this.health.down(e.error);
        this.metrics.etcdErrors.inc();
        return;
    }
  }

  private async checkConfigAfterReset(): Promise<void> {
    const kv = await this.store.get(CONFIG_KEY).catch(() => null);
    if (kv === undefined) {
      this.log.warn(
        'the network config is gone from etcd too; write it again (weft network init) so that new nodes can join. Running nodes keep their leases and routes',
      );
    }
  }

  private fail(err: Error): void {
    this.log.error(err.message, { code: (err as { code?: string }).code });
    this.failure?.(err);
  }

  /**
   * On each resync: with etcd, ask how the cluster stands (a member's leader; a quiet agent would not
   * notice a lost quorum otherwise, as its watch just falls silent). Without that, while etcd is
   * down, a cheap read notices it is back even if no lease changes.
   */
  private probeStore(): void {
    if (this.store.health) {
      this.store.health().then(
        (r) => (r.state === 'ok' ? this.health.up() : r.state === 'no-quorum' ? this.health.quorumLost(r.detail) : this.health.unreachable(r.detail)),
        () => undefined,
      );
      return;
    }
    if (this.health.healthy) return;
    this.store.get(CONFIG_KEY).then(
      () => this.health.up(),
      () => undefined,
    );
  }

  /** The desired state, once the full lease list is in; before that there is nothing to act on. */
  private desired(): DesiredState | undefined {
    const leases = this.leases;
    const own = leases?.ownLease;
    if (!leases?.synced || !own) return undefined;
    return this.backend.desired(own, leases.remoteLeases(), {
      network: this.config.network,
      ipMasq: this.o.ipMasq,
      forwardRules: this.o.forwardRules ?? true,
      dns: this.o.dns?.ip,
    });
  }

  private async reconcileOnce(reason: string): Promise<boolean> {
    const desired = this.desired();
    if (!desired) return true;
    this.lastDesired = desired;
    this.reportSkipped(desired);
    const at = new Date().toISOString();
    const trigger = triggerOf(reason);
    const timer = this.metrics.reconcileDuration.startTimer({ trigger });
    let ok = true;
    const known = this.known;
    this.known = undefined;
    let unchanged = false;
    try {
      const actual = trigger === 'lease' && known ? known : await readActual(undefined, desired, this.quietResync(trigger, known));
      const wanted = JSON.stringify(desired);
      if (trigger === 'resync' && known && wanted === this.settled && sameKernel(actual, known)) {
        // The last run left the kernel as this desired state has it, and nothing has moved since: the diff would be empty.
        this.known = known;
        this.lastReconcile = { at, changes: [] };
        unchanged = true;
        return true;
      }
      this.settled = undefined;
      const { plan, changes } = reconcile(undefined, desired, actual);
      if (!plan.empty) {
        const started = performance.now();
        await apply(plan);
        for (const c of changes) this.log.info(c, { reason, kind: changeKind(c) });
        // Nothing but the periodic resync found these: the kernel was changed behind the agent's back.
        if (trigger === 'resync') for (const c of changes) this.metrics.driftRepairs.inc({ kind: changeKind(c) });
        this.log.debug('applied', { ops: plan.ops.length, ms: (performance.now() - started).toFixed(1) });
      }
      // The udp packet loop: attach to the device (which exists now) and load the peer table.
      if (desired.udp && this.backend.datapath) await this.backend.datapath.sync(desired.udp);
      this.known = applied(actual, plan);
      if (this.known) this.settled = wanted;
      this.lastReconcile = { at, changes };
      if (this.lastError) this.log.info('reconcile succeeded again');
      this.lastError = '';
    } catch (err) {
      const message = (err as Error).message;
      this.lastReconcile = { at, changes: [], error: message };
      if (message !== this.lastError) this.log.error('reconcile failed; retrying', { reason, error: message });
      this.lastError = message;
      ok = false;
    } finally {
      timer();
      this.metrics.reconciles.inc({ trigger, result: unchanged ? 'unchanged' : ok ? 'ok' : 'error' });
      if (!unchanged) this.statusFileSoon();
    }
    return ok;
  }

  /**
   * A lease event's reconcile starts from what the last one left (see applied), reading nothing.
   * Every other run comes here: a resync reads nftables (cheaply, by generation) and reads netlink
   * only when a notification since the last read may concern it, and at least every
   * FULL_READ_EVERY resyncs (at 100 x 10 the read was a third of an idle agent's time, and a quiet
   * node's kernel sends no notifications). Notifications are drained before the read they lead to,
   * so one that came before it is not counted after it; what the agent applies itself makes the
   * next resync read. Returns the netlink part to reuse, or undefined to read.
   */
  private quietResync(trigger: ReconcileTrigger, known: ActualState | undefined): NetlinkPart | undefined {
    try {
      if (this.changes?.changed(concernsNetlinkPart(known?.device?.index))) this.netlinkDirty = true;
    } catch (err) {
      this.log.warn('cannot read netlink notifications; every resync reads the kernel', { error: (err as Error).message });
      this.changes?.close();
      this.changes = undefined;
    }
    if (trigger === 'resync' && known && this.changes && !this.netlinkDirty && this.quietResyncs < FULL_READ_EVERY - 1) {
      this.quietResyncs++;
      return known;
    }
    this.netlinkDirty = false;
    this.quietResyncs = 0;
    return undefined;
  }

  /**
   * The status file is for `weft agent status` when the agent does not answer, so it may lag a few
   * seconds: a burst of lease events (100 nodes joining) writes it once, not once per reconcile.
   */
  private statusFileSoon(): void {
    if (this.statusFileTimer) return;
    this.statusFileTimer = setTimeout(() => {
      this.statusFileTimer = undefined;
      void this.writeStatus();
    }, STATUS_FILE_MS);
  }

  private async writeStatus(): Promise<void> {
    try {
      writeStatusFile(this.o.stateDir, await this.status(false));
    } catch (err) {
      this.log.warn('cannot write the status file', { error: (err as Error).message });
    }
  }

  /** Each lease the backend cannot route to is reported once (and again if it comes back after being fixed). */
  private reportSkipped(desired: DesiredState): void {
    const now = new Set(desired.skipped.map((s) => `${s.subnet}|${s.publicIP}|${s.reason}`));
    for (const s of desired.skipped) {
      if (!this.reported.has(`${s.subnet}|${s.publicIP}|${s.reason}`))
        this.log.warn('not routing to a remote subnet', { subnet: s.subnet, publicIP: s.publicIP, reason: s.reason });
    }
    this.reported.clear();
    for (const k of now) this.reported.add(k);
  }

  /** Served CNI requests: latency and errors in the metrics; ADD and DEL logged with the pod they wire. */
  private cniAnswered(r: Parameters<NonNullable<CniHooks['answered']>>[0]): void {
    const command = r.env.CNI_COMMAND ?? 'unknown';
    this.metrics.cniDuration.observe({ command, plugin: r.plugin }, r.seconds);
    if (r.exitCode !== 0) this.metrics.cniErrors.inc({ command, plugin: r.plugin, code: String(r.exitCode) });
    const pod = podOfCniArgs(r.env.CNI_ARGS);
    const fields: Fields = {
      ...(pod ? { pod: `${pod.namespace}/${pod.name}` } : {}),
      container: r.env.CNI_CONTAINERID,
      ifname: r.env.CNI_IFNAME,
      plugin: r.plugin,
      ms: Number((r.seconds * 1000).toFixed(1)),
    };
    if (r.exitCode !== 0) {
      let error = r.stdout.trim();
      try {
        const msg = (JSON.parse(r.stdout) as { msg?: unknown }).msg;
        if (typeof msg === 'string') error = msg;
      } catch {
        // not the spec's error JSON: log it as it is
      }
      this.log.warn(`cni ${command} failed`, { ...fields, exitCode: r.exitCode, error });
    } else if (command === 'ADD') this.log.info('cni ADD', { ...fields, ip: resultIp(r.stdout), subnet: this.ownSubnet() });
    else if (command === 'DEL') this.log.info('cni DEL', fields);
    else this.log.debug(`cni ${command}`, fields);
  }

  private ownSubnet(): string | undefined {
    const own = this.leases?.ownLease;
    return own && formatNetwork(own.subnet);
  }

  /** The status; `live` re-reads the kernel to show the drift from desired state right now. */
  async status(live: boolean): Promise<AgentStatus> {
    const own: Lease | undefined = this.leases?.ownLease;
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
      ...(own ? { ownLease: leaseView(own) } : {}),
      remoteLeases: (this.leases?.remoteLeases() ?? []).map(leaseView).sort((a, b) => bySubnet.compare(a.subnet, b.subnet)),
      ...(desired ? { desired } : {}),
      drift,
      ...(plan ? { plan } : {}),
      ...(this.lastReconcile ? { lastReconcile: this.lastReconcile } : {}),
      ...(this.backend?.datapath ? { datapath: this.backend.datapath.status() } : {}),
      ...(this.services ? { services: this.services.status() } : {}),
      store: this.health.view(),
      source: live ? 'live' : 'file',
      at: new Date().toISOString(),
    };
  }
}
