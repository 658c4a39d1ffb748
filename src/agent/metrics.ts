import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DatapathStatus } from '../backend/types.js';
import type { ServicesStatus } from './services.js';

/** What the agent knows right now, read at scrape time. */
export interface MetricsSource {
  node: string;
  backend(): string | undefined;
  ownLease(): { subnet: string; publicIP: string } | undefined;
  remoteLeases(): number;
  etcdHealthy(): boolean;
  /** The udp backend's packet loop, when it runs. */
  datapath(): DatapathStatus | undefined;
  services(): ServicesStatus | undefined;
  /** The firewall's `vxlan_forged` counter (vxlan only; undefined when the table or counter is absent). */
  forged(): Promise<{ packets: number; bytes: number } | undefined>;
}

/** What reconciles are for; the scheduler's reasons ('lease added', 'lease removed') fold into 'lease'. */
export type ReconcileTrigger = 'initial' | 'lease' | 'resync' | 'retry';

export function triggerOf(reason: string): ReconcileTrigger {
  if (reason === 'initial' || reason === 'resync' || reason === 'retry') return reason;
  return 'lease';
}

/** The udp packet loop's counters (udp-shared.ts COUNTERS) as metric, label and value. */
const UDP_COUNTERS: Record<string, { metric: 'packets' | 'bytes' | 'dropped' | 'errors'; labels: Record<string, string> }> = {
  txPackets: { metric: 'packets', labels: { direction: 'tx' } },
  rxPackets: { metric: 'packets', labels: { direction: 'rx' } },
  txBytes: { metric: 'bytes', labels: { direction: 'tx' } },
  rxBytes: { metric: 'bytes', labels: { direction: 'rx' } },
  droppedUnknownSource: { metric: 'dropped', labels: { reason: 'unknown_source' } },
  droppedMalformed: { metric: 'dropped', labels: { reason: 'malformed' } },
  droppedNotLocal: { metric: 'dropped', labels: { reason: 'not_local' } },
  netUnreachable: { metric: 'dropped', labels: { reason: 'net_unreachable' } },
  ttlExpired: { metric: 'dropped', labels: { reason: 'ttl_expired' } },
  droppedNonIPv4: { metric: 'dropped', labels: { reason: 'non_ipv4' } },
  sendErrors: { metric: 'errors', labels: { op: 'udp_send' } },
  tunWriteErrors: { metric: 'errors', labels: { op: 'tun_write' } },
};

const FAST = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const DNS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * The agent's Prometheus metrics, one registry per agent. Events (reconciles, lease renewals, CNI
 * requests, proxy syncs, DNS answers) are recorded as they happen; states and the counters that
 * live elsewhere (the udp loop's shared memory, the DNS server, the firewall's nft counter) are
 * read at scrape time.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly reconciles: Counter<'trigger' | 'result'>;
  readonly reconcileDuration: Histogram<'trigger'>;
  readonly driftRepairs: Counter<'kind'>;
  readonly leaseRenewals: Counter;
  readonly leaseReasserts: Counter<'why'>;
  readonly etcdErrors: Counter;
  readonly etcdResets: Counter;
  readonly cniDuration: Histogram<'command' | 'plugin'>;
  readonly cniErrors: Counter<'command' | 'plugin' | 'code'>;
  readonly serviceSyncDuration: Histogram<'kind'>;
  readonly serviceSyncErrors: Counter;
  readonly dnsDuration: Histogram<'protocol'>;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    // prom-client samples event-loop lag with a 10 ms timer by default: 100 wakeups a second, about 1% of a core
    // per idle agent, a whole core for a 100-node lab. One sample a second still catches every stall.
    collectDefaultMetrics({ register: this.registry, prefix: 'weft_', eventLoopMonitoringPrecision: 1000 });
    // Gauges named like counters, which promtool (rightly) rejects; the heap and event loop figures stay.
    for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total']) this.registry.removeSingleMetric(`weft_nodejs_${name}`);
    new Gauge({
      name: 'weft_agent_info',
      help: "The agent's node name and backend (always 1)",
      labelNames: ['node', 'backend'],
      registers,
      collect() {
        this.reset();
        this.set({ node: source.node, backend: source.backend() ?? 'unknown' }, 1);
      },
    });

    new Gauge({
      name: 'weft_lease_held',
      help: 'Whether this node holds its subnet lease (1) or not (0)',
      registers,
      collect() {
        this.set(source.ownLease() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'weft_lease_info',
      help: "This node's lease: its subnet and PublicIP (1 while held)",
      labelNames: ['subnet', 'public_ip'],
      registers,
      collect() {
        this.reset();
        const own = source.ownLease();
        if (own) this.set({ subnet: own.subnet, public_ip: own.publicIP }, 1);
      },
    });
    new Gauge({
      name: 'weft_remote_leases',
      help: "Other nodes' leases this agent follows (and routes to)",
      registers,
      collect() {
        this.set(source.remoteLeases());
      },
    });
    this.leaseRenewals = new Counter({ name: 'weft_lease_renewals_total', help: "Renewals of this node's lease (its TTL refreshed in etcd)", registers });
    this.leaseReasserts = new Counter({
      name: 'weft_lease_reasserts_total',
      help: "Times this node's lease was written back: deleted by someone else, or etcd lost its data (reset)",
      labelNames: ['why'],
      registers,
    });

    new Gauge({
      name: 'weft_etcd_up',
      help: 'Whether etcd answered the last request (1) or not (0)',
      registers,
      collect() {
        this.set(source.etcdHealthy() ? 1 : 0);
      },
    });
    this.etcdErrors = new Counter({ name: 'weft_etcd_errors_total', help: 'Failed etcd requests of the lease manager (renewals, lists, watches)', registers });
    this.etcdResets = new Counter({ name: 'weft_etcd_resets_total', help: 'Times etcd was found to have lost its data or to be another cluster', registers });

    this.reconciles = new Counter({
      name: 'weft_reconciles_total',
      help: 'Reconcile runs (kernel compared with the desired state) by what started them and how they ended (unchanged: a resync that found nothing moved since a run that left the kernel as desired, so no diff)',
      labelNames: ['trigger', 'result'],
      registers,
    });
    this.reconcileDuration = new Histogram({
      name: 'weft_reconcile_duration_seconds',
      help: 'Time of a reconcile run: read the kernel, diff, apply',
      labelNames: ['trigger'],
      buckets: FAST,
      registers,
    });
    this.driftRepairs = new Counter({
      name: 'weft_drift_repairs_total',
      help: 'Changes the periodic resync made because the kernel no longer matched (someone else changed it), by kind',
      labelNames: ['kind'],
      registers,
    });

    new Counter({
      name: 'weft_vxlan_forged_packets_total',
      help: 'UDP packets to the VXLAN port from addresses that hold no lease, dropped (nft counter vxlan_forged)',
      registers,
      async collect() {
        const c = await source.forged();
        this.reset();
        if (c) this.inc(c.packets);
      },
    });
    new Counter({
      name: 'weft_vxlan_forged_bytes_total',
      help: 'Bytes of the dropped forged VXLAN packets (nft counter vxlan_forged)',
      registers,
      async collect() {
        const c = await source.forged();
        this.reset();
        if (c) this.inc(c.bytes);
      },
    });

    const udp = (metric: 'packets' | 'bytes' | 'dropped' | 'errors') =>
      function (this: Counter<string>) {
        this.reset();
        const counters = source.datapath()?.counters;
        if (!counters) return;
        for (const [name, value] of Object.entries(counters)) {
          const m = UDP_COUNTERS[name];
          if (m?.metric === metric) this.inc(m.labels, value);
        }
      };
    new Counter({
      name: 'weft_udp_packets_total',
      help: 'udp backend: packets carried (tx: flannel0 → peer, rx: peer → flannel0)',
      labelNames: ['direction'],
      registers,
      collect: udp('packets'),
    });
    new Counter({ name: 'weft_udp_bytes_total', help: 'udp backend: bytes carried', labelNames: ['direction'], registers, collect: udp('bytes') });
    new Counter({
      name: 'weft_udp_dropped_packets_total',
      help: 'udp backend: packets dropped, by reason (net_unreachable: answered with ICMP net unreachable)',
      labelNames: ['reason'],
      registers,
      collect: udp('dropped'),
    });
    new Counter({
      name: 'weft_udp_errors_total',
      help: 'udp backend: failed sends to peers and writes to flannel0',
      labelNames: ['op'],
      registers,
      collect: udp('errors'),
    });
    this.cniDuration = new Histogram({
      name: 'weft_cni_request_duration_seconds',
      help: 'Served CNI requests, from the request read to the answer (pod registration included)',
      labelNames: ['command', 'plugin'],
      buckets: FAST,
      registers,
    });
    this.cniErrors = new Counter({
      name: 'weft_cni_request_errors_total',
      help: 'Served CNI requests that failed, by command and exit code (the CNI error code)',
      labelNames: ['command', 'plugin', 'code'],
      registers,
    });

    this.serviceSyncDuration = new Histogram({
      name: 'weft_service_sync_duration_seconds',
      help: 'Service proxy syncs: incremental (changed Services), full (read back and repair), unchanged (periodic check, nftables untouched)',
      labelNames: ['kind'],
      buckets: FAST,
      registers,
    });
    this.serviceSyncErrors = new Counter({
      name: 'weft_service_sync_errors_total',
      help: 'Service proxy transactions that failed (a full sync follows)',
      registers,
    });
    const proxyGauge = (name: string, help: string, key: 'services' | 'endpoints' | 'chains' | 'rules') =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.reset();
          const s = source.services();
          if (s?.[key] !== undefined) this.set(s[key]);
        },
      });
    proxyGauge('weft_services', 'Services the proxy programs', 'services');
    proxyGauge('weft_service_endpoints', 'Endpoints the service rules lead to', 'endpoints');
    proxyGauge('weft_service_chains', 'Regular chains in the weft-proxy tables', 'chains');
    proxyGauge('weft_service_rules', 'Rules in those chains', 'rules');

    new Counter({
      name: 'weft_dns_queries_total',
      help: 'Cluster DNS queries received, by transport',
      labelNames: ['protocol'],
      registers,
      collect() {
        this.reset();
        const q = source.services()?.dns?.queries;
        if (!q) return;
        this.inc({ protocol: 'udp' }, q.udp);
        this.inc({ protocol: 'tcp' }, q.tcp);
      },
    });
    new Counter({
      name: 'weft_dns_responses_total',
      help: 'Cluster DNS responses by rcode',
      labelNames: ['rcode'],
      registers,
      collect() {
        this.reset();
        for (const [rcode, n] of Object.entries(source.services()?.dns?.rcodes ?? {})) this.inc({ rcode }, n);
      },
    });
    new Counter({
      name: 'weft_dns_forwarded_total',
      help: 'Cluster DNS queries for names outside the zone, forwarded upstream',
      registers,
      collect() {
        this.reset();
        const f = source.services()?.dns?.forwarded;
        if (f !== undefined) this.inc(f);
      },
    });
    this.dnsDuration = new Histogram({
      name: 'weft_dns_request_duration_seconds',
      help: "Cluster DNS: from a query's arrival to its answer handed to the socket",
      labelNames: ['protocol'],
      buckets: DNS,
      registers,
    });
  }

  /** Serves GET /metrics on host:port; everything else is 404. */
  async serve({ host, port }: { host: string; port: number }): Promise<Server> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; metrics are at /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server;
  }
}
