import { readFileSync } from 'node:fs';
import { retrying } from '../store/retry.js';
import { formatNetwork, type Cidr } from '../ip/cidr.js';
import { DNS_PORT } from '../backend/firewall.js';
import type { CniHooks } from '../cni/serve.js';
import { ClusterDns, type DnsStats } from '../dns/server.js';
import { setSysctl } from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { ServiceProxy, type ProxyStatus } from '../proxy/proxy.js';
import { RegistryCache } from '../service/cache.js';
import { livenessOf } from '../service/live.js';
import { Registry } from '../service/registry.js';
import { EtcdStore, type EtcdTlsOptions } from '../store/etcd.js';
import { isStoreUnavailable } from '../store/store.js';
import type { Lease } from '../subnet/lease.js';
import { ensureNodeDns } from './dns.js';
import type { Logger } from './log.js';
import type { AgentMetrics } from './metrics.js';

/** kube-proxy's and kubelet's requirement: bridged traffic passes the IP hooks, so a same-node reply to DNATed traffic is un-NATed. */
export const BRIDGE_NF_SYSCTL = 'net.bridge.bridge-nf-call-iptables';
const BRIDGE_NF_PATH = `/proc/sys/${BRIDGE_NF_SYSCTL.replace(/\./g, '/')}`;

export interface ServicesOptions {
  node: string;
  /** The pod Network, as the network config has it. */
  network: Cidr;
  etcd: { endpoints: string[]; prefix: string; tls?: EtcdTlsOptions };
  /** This node's lease and the remote ones, as the agent's LeaseManager holds them right now. */
  leases: () => Lease[];
  /** Serve the cluster DNS on this node (absent: --no-dns). */
  dns?: NodeDnsOptions;
  log: Logger;
  metrics: AgentMetrics;
}

export interface NodeDnsOptions {
  /** The cluster DNS IP (kube-dns's ClusterIP), put on the dummy device. */
  ip: string;
  zone: string;
  ttl?: number;
  /** Resolvers for names outside the zone (absent: the node's /etc/resolv.conf). */
  upstreams?: string[];
}

/** What `weft agent status` shows of the Services part. */
export interface ServicesStatus extends Partial<ProxyStatus> {
  registryPrefix: string;
  /** The registry's first full list is in and the proxy made its first sync. */
  started: boolean;
  /** `net.bridge.bridge-nf-call-iptables` as last read ('missing': br_netfilter is not loaded). */
  bridgeNf: '0' | '1' | 'missing';
  /** The node-local DNS server, when it runs. */
  dns?: { ip: string; zone: string } & Partial<DnsStats>;
}

/** A pod's identity from CNI_ARGS (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`), as kubelet passes it; undefined without one. */
export function podOfCniArgs(args: string | undefined): { namespace: string; name: string } | undefined {
  const kv = new Map<string, string>();
  for (const part of (args ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) kv.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const name = kv.get('K8S_POD_NAME');
  if (!name) return undefined;
  return { namespace: kv.get('K8S_POD_NAMESPACE') || 'default', name };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The agent's Services part: its own etcd client on Weft's registry prefix, the registry cache,
 * and the service proxy programming this node's `weft-proxy` tables. An endpoint inside the pod
 * Network counts only while its IP lies in a subnet some node holds a lease for: a node whose lease
 * is gone takes its pods' endpoints with it (an address outside the Network, from an EndpointSlice,
 * always counts). Pods are registered from the served CNI path (cniHooks).
 */
export class AgentServices {
  private readonly store: EtcdStore;
  readonly registry: Registry;
  private readonly cache: RegistryCache;
  private readonly proxy: ServiceProxy;
  private readonly dns: ClusterDns | undefined;
  private dnsStarted = false;
  private live!: (ip: string) => boolean;
  /** The proxy follows the cache (its first sync may still run). */
  private following = false;
  private started = false;
  private stopped = false;
  private bridgeNf: ServicesStatus['bridgeNf'] = 'missing';
  private warnedBridgeNf = false;

  constructor(private readonly o: ServicesOptions) {
    this.store = new EtcdStore({ endpoints: o.etcd.endpoints, prefix: o.etcd.prefix, ...(o.etcd.tls ? { tls: o.etcd.tls } : {}) });
    this.registry = new Registry(this.store);
    this.cache = new RegistryCache(this.store, (m) => o.log.warn(m));
    this.refreshSubnets();
    this.proxy = new ServiceProxy({
      node: { name: o.node, podNetwork: formatNetwork(o.network) },
      cache: this.cache,
      live: (ip) => this.live(ip),
      log: o.log,
      synced: (s) => {
        o.metrics.serviceSyncDuration.observe({ kind: s.kind }, s.seconds);
        if (s.repaired) o.metrics.driftRepairs.inc({ kind: 'service_rules' }, s.repaired);
      },
      failed: () => o.metrics.serviceSyncErrors.inc(),
    });
    if (o.dns)
      this.dns = new ClusterDns({
        cache: this.cache,
        zone: o.dns.zone,
        ...(o.dns.ttl !== undefined ? { ttl: o.dns.ttl } : {}),
        ...(o.dns.upstreams ? { upstreams: o.dns.upstreams } : {}),
        // Pods, and the node itself (which reaches a local address from that address).
        allow: [formatNetwork(o.network), `${o.dns.ip}/32`, '127.0.0.0/8'],
        listen: [{ address: o.dns.ip, port: DNS_PORT }],
        live: (ip) => this.live(ip),
        log: o.log,
        answered: (seconds, protocol) => o.metrics.dnsDuration.observe({ protocol }, seconds),
      });
  }

  /**
   * Sets the bridge sysctl, lists the registry (retrying while etcd is out of reach) and makes the
   * proxy's first full sync. Runs in the background of the agent's start: routes and CNI do not wait for it.
   */
  async start(): Promise<void> {
    await this.ensureBridgeNf();
    if (this.o.dns) for (const c of await ensureNodeDns(undefined, this.o.dns.ip)) this.o.log.info(c);
    let delay = 200;
    for (;;) {
      if (this.stopped) return;
      try {
        await this.cache.start();
        break;
      } catch (err) {
        if (!isStoreUnavailable(err)) throw err;
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
    if (this.stopped) return;
    if (this.dns) {
      await this.dns.start();
      this.dnsStarted = true;
    }
    this.following = true;
    await this.proxy.start();
    this.started = true;
    this.o.log.info('service proxy running', { registry: this.o.etcd.prefix, services: this.cache.services.size, pods: this.cache.pods.size });
  }

  /** Leases came or went: endpoints on nodes without a lease stop counting, and come back with it. */
  leasesChanged(): void {
    this.refreshSubnets();
    if (this.dnsStarted) this.dns!.leasesChanged();
    if (this.following) this.proxy.leasesChanged();
  }

  /** The agent's resync tick: the proxy reads its table back and repairs drift; the sysctl is checked again. */
  resync(): void {
    if (!this.following || this.stopped) return;
    void this.ensureBridgeNf();
    void this.ensureDns();
    void this.proxy.resync();
  }

  /** For serveCni: a pod wired by ADD is registered (IP, container, this node); DEL unregisters it. Failures are logged, never fail CNI. */
  cniHooks(): CniHooks {
    const warn = (what: string, pod: { namespace: string; name: string }) => (err: Error) =>
      this.o.log.warn(`cannot ${what} pod in the registry; its Services miss it until it is added again`, {
        pod: `${pod.namespace}/${pod.name}`,
        error: err.message,
      });
    return {
      added: async (env, ip) => {
        const pod = podOfCniArgs(env.CNI_ARGS);
        if (!pod || !ip) return;
        // Retried (a compare-and-swap, safe to repeat): a 100-node lab's etcd is busy while its pods come up.
        await retrying(() => this.registry.registerPod({ ...pod, ip, containerID: env.CNI_CONTAINERID ?? '', node: this.o.node }), { attempts: 5 }).then(
          () => this.o.log.info('pod registered', { pod: `${pod.namespace}/${pod.name}`, ip }),
          warn('register', pod),
        );
      },
      deleted: async (env) => {
        const pod = podOfCniArgs(env.CNI_ARGS);
        if (!pod) return;
        await retrying(() => this.registry.unregisterPod({ ...pod, containerID: env.CNI_CONTAINERID ?? '' }), { attempts: 5 }).then(
          (gone) => gone && this.o.log.info('pod unregistered', { pod: `${pod.namespace}/${pod.name}` }),
          warn('unregister', pod),
        );
      },
    };
  }

  status(): ServicesStatus {
    const dns = this.o.dns ? { dns: { ip: this.o.dns.ip, zone: this.o.dns.zone, ...(this.dnsStarted ? this.dns!.stats() : {}) } } : {};
    return { registryPrefix: this.o.etcd.prefix, started: this.started, bridgeNf: this.bridgeNf, ...(this.started ? this.proxy.status() : {}), ...dns };
  }

  /**
   * Stops following the registry and serving DNS; the proxy's rules stay, so connections through
   * Services keep working, and so does the DNS device (queries are refused until the agent is back).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.dnsStarted) await this.dns!.stop();
    await this.proxy.stop();
    this.cache.stop();
    await this.store.close().catch(() => undefined);
  }

  private refreshSubnets(): void {
    this.live = livenessOf(
      this.o.network,
      this.o.leases().map((l) => l.subnet),
    );
  }

  /** Someone removed the DNS device or its address: put them back (the notrack rules are the reconcile's). */
  private async ensureDns(): Promise<void> {
    if (!this.o.dns) return;
    try {
      const repairs = await ensureNodeDns(undefined, this.o.dns.ip);
      for (const c of repairs) this.o.log.warn(`node-local DNS repaired: ${c}`);
      if (repairs.length) this.o.metrics.driftRepairs.inc({ kind: 'dns' }, repairs.length);
    } catch (err) {
      this.o.log.warn('cannot repair the node-local DNS device', { error: (err as Error).message });
    }
  }

  private async ensureBridgeNf(): Promise<void> {
    try {
      this.bridgeNf = readFileSync(BRIDGE_NF_PATH, 'utf8').trim() === '1' ? '1' : '0';
    } catch {
      this.bridgeNf = 'missing';
      if (!this.warnedBridgeNf)
        this.o.log.warn(
          `${BRIDGE_NF_SYSCTL} is missing (the br_netfilter module is not loaded): a pod reaching a pod on its own node through a Service gets no reply; run modprobe br_netfilter`,
        );
      this.warnedBridgeNf = true;
      return;
    }
    if (this.bridgeNf === '1') return;
    try {
      await apply(new Plan().add(setSysctl({ ns: undefined, key: BRIDGE_NF_SYSCTL, value: '1' })));
      this.bridgeNf = '1';
      this.o.log.info(`set ${BRIDGE_NF_SYSCTL}=1`);
    } catch (err) {
      this.o.log.warn(`cannot set ${BRIDGE_NF_SYSCTL}=1`, { error: (err as Error).message });
    }
  }
}
