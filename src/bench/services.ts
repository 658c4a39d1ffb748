import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { netnsPath, netnsPids, signalNetns } from '../kernel/netns.js';
import { nftSetKeys } from '../kernel/nfnl.js';
import { down, execIn, readState, up, type LabState, type NodeState, type PodState } from '../lab/lab.js';
import { nodeFiles } from '../lab/build.js';
import { startNodeDaemon } from '../lab/procs.js';
import { readStatus } from '../agent/status.js';
import { cleanupProxy, PROXY_FAMILY, PROXY_TABLE, PROXY_TABLES } from '../proxy/proxy.js';
import { APP_PORT } from '../lab/workload.js';
import { Topology } from '../topo/topology.js';
import { table } from '../cli/format.js';
import { waitFor } from '../util/wait.js';
import { iperf } from './datapath.js';
import { missing, outcome, percentile, type Bar, type Outcome } from './report.js';
import type { Reply, Request, ServiceSpec } from './services-driver.js';

/**
 * `weft bench services`: a 2-node lab of its own, filled with N Services of 2 endpoints each
 * (N = 10, 1,000, 10,000, 30,000), and at each N what the proxy costs: connect time through a
 * ClusterIP, one change until every node has it, a full sync, throughput through a ClusterIP vs the
 * pod's own IP, the agent's memory and the nft table's size. Every figure is set against the same
 * figure at N = 10 in the same run (issue 9's bars and goals).
 *
 * Who does what in the lab (3 pods per node):
 *   pod-1a (node1), pod-2a (node2): the clients; connects and change watches start in their namespaces
 *   `probe`: the Service whose connect time is measured at every N, endpoints pod-2b and pod-2c (node2)
 *   `move`: its second endpoint moves between pod-2b and pod-2c, one change per round
 *   `add-N-R`, and the fillers `s-I` up to N: endpoints pod-1b and pod-2b
 *   `iperf`: one endpoint, pod-2b:5201 (iperf3's control and data connections must meet one server)
 */
const DRIVER = fileURLToPath(new URL('./services-driver.js', import.meta.url));
/** The proxy's shard tables, each with its own `service-ips` map (the front table has none). */
const SHARD_TABLES = PROXY_TABLES.filter((t) => t !== PROXY_TABLE);
const SERVICE_MAP = 'service-ips';
const IPERF_PORT = 5201;
/** Bench ClusterIPs come from here (inside the default 10.96.0.0/12), skipping any already taken. */
const FIRST_IP = (10 << 24) | (100 << 16);
const IPPROTO_TCP = 6;
const WRITE_CHUNK = 2000;
const WATCH_INTERVAL_MS = 3;
const WATCH_TIMEOUT_MS = 30_000;

export const CONNECT_BAR = 1.2;
export const CONNECT_GOAL = 1.05;
export const CHANGE_BAR = 3;
export const CHANGE_GOAL = 1.5;
export const THROUGHPUT_BAR = 0.9;
export const THROUGHPUT_GOAL = 0.97;

export interface ServicesOptions {
  sizes: number[];
  /** Connects per target at each N (ClusterIP and the pod's own IP, alternating). */
  connects: number;
  /** Rounds of each change at each N. */
  changes: number;
  iperfSeconds: number;
  iperfRounds: number;
  progress: (step: string) => void;
}

export interface ServicesRow {
  services: number;
  /** Writing this N's new Services (and their EndpointSlices) into etcd. */
  writeSeconds: number;
  /** From the first write until every node's table has every Service. */
  programmedSeconds: number;
  connectP50Ms: number;
  connectP99Ms: number;
  /** The same connects to one of the probe's backends by its own IP, alternating with those above. */
  directP50Ms: number;
  directP99Ms: number;
  connectFailures: number;
  /** Median over the rounds of the slower node; and the slowest round. */
  addMs: number;
  addMaxMs: number;
  moveMs: number;
  moveMaxMs: number;
  /** The agents' own time per change (the slower node's `lastSync.ms`), median over every change. */
  agentChangeMs: number;
  /** node1's agent restarted on empty tables, until its tables have every Service again (the agent's start included). */
  fullSyncSeconds: number;
  /** The agent's own time for that full sync (`weft agent status`: services.lastFullSync.ms). */
  agentFullSyncMs: number;
  clusterIpGbps: number;
  podIpGbps: number;
  throughputRatio: number;
  /** The larger of the two agents' RSS. */
  agentRssMiB: number;
  rulesetBytes: number;
  chains: number;
  rules: number;
  elements: number;
}

export interface ServicesReport extends Outcome {
  bench: 'services';
  connects: number;
  changes: number;
  iperfSeconds: number;
  iperfRounds: number;
  rows: ServicesRow[];
}

export type Done = Extract<Reply, { done: true }>;

/** A driver process (services-driver.ts) in a namespace, spoken to one JSON line per request. */
export class Driver {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { onEvent?: (r: Reply) => void; resolve: (r: Done) => void; reject: (e: Error) => void }>();
  private stderr = '';

  constructor(
    readonly what: string,
    ns: string,
    args: string[],
  ) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, DRIVER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const r = JSON.parse(line) as Reply & { id: number };
      const p = this.pending.get(r.id);
      if (!p) return;
      if (!r.done) p.onEvent?.(r);
      else {
        this.pending.delete(r.id);
        if ('error' in r) p.reject(new Error(`${this.what}: ${r.error}`));
        else p.resolve(r);
      }
    });
    this.child.on('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`${this.what} ended (${signal ?? `exit ${code}`}): ${this.stderr.trim() || 'no output'}`));
      this.pending.clear();
    });
  }

  ask<T extends Done>(req: Request, onEvent?: (r: Reply) => void): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { onEvent, resolve: resolve as (r: Done) => void, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, ...req })}\n`);
    });
  }

  stop(): void {
    this.child.kill();
  }
}

const ipOf = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
const msSince = (startNs: string, atNs: string) => Number(BigInt(atNs) - BigInt(startNs)) / 1e6;
const median = (xs: number[]) => percentile(xs, 50);

function rssMiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/**
 * `ip:port` of the TCP keys in the node's service maps (one per shard table; none while the tables
 * are not there), read over netlink: `nft list` would load every chain first, seconds at 30,000 Services.
 */
async function programmed(node: NodeState): Promise<Set<string>> {
  const ns = netnsPath(node.ns);
  const keys = (await Promise.all(SHARD_TABLES.map((t) => nftSetKeys(ns, PROXY_FAMILY, t, SERVICE_MAP).catch(() => [])))).flat();
  // ipv4_addr . inet_proto . inet_service: each field padded to 4 bytes.
  return new Set(keys.filter((k) => k.length === 12 && k[4] === IPPROTO_TCP).map((k) => `${k[0]}.${k[1]}.${k[2]}.${k[3]}:${k.readUInt16BE(8)}`));
}

/** Waits until every node's service map holds every one of `services`. */
async function untilProgrammed(nodes: NodeState[], services: ServiceSpec[], progress: (step: string) => void): Promise<void> {
  const want = services.map((x) => `${x.ip}:${x.port}`);
  const timeoutMs = 120_000 + 10 * services.length;
  let last = 0;
  await waitFor(
    async () => {
      const have = (await Promise.all(nodes.map(programmed))).map((set) => want.filter((k) => set.has(k)).length);
      if (Date.now() - last > 5000) {
        last = Date.now();
        progress(`  in the nodes' tables: ${nodes.map((n, i) => `${n.name} ${have[i]}`).join(', ')} of ${want.length}`);
      }
      return have.every((h) => h === want.length);
    },
    { timeoutMs, intervalMs: 500, what: `every node's ${SERVICE_MAP} maps to hold all ${want.length} Services` },
  );
}

async function agentRssMiB(nodes: NodeState[]): Promise<number> {
  const pids = (await Promise.all(nodes.map((n) => netnsPids(n.ns)))).flat();
  return Math.max(...pids.map(rssMiB));
}

/**
 * The size of node1's proxy tables (front and shards): bytes as `nft list` prints them, and their
 * chains, rules and set/map elements. Listed table by table: nft's listing grows faster than linearly
 * with the chains it holds, so one `nft list ruleset` of 30,000 Services takes minutes, 33 tables seconds each.
 */
async function ruleset(node: NodeState): Promise<Pick<ServicesRow, 'rulesetBytes' | 'chains' | 'rules' | 'elements'>> {
  const size = { rulesetBytes: 0, chains: 0, rules: 0, elements: 0 };
  for (const table of PROXY_TABLES) {
    size.rulesetBytes += Buffer.byteLength((await execIn(node.ns, ['nft', 'list', 'table', PROXY_FAMILY, table])).stdout);
    const json = (await execIn(node.ns, ['nft', '-j', 'list', 'table', PROXY_FAMILY, table])).stdout;
    for (const item of (JSON.parse(json) as { nftables: Record<string, { elem?: unknown[] }>[] }).nftables) {
      if ('chain' in item) size.chains++;
      if ('rule' in item) size.rules++;
      size.elements += (item.map?.elem?.length ?? 0) + (item.set?.elem?.length ?? 0);
    }
  }
  return size;
}

/**
 * A change, timed from its write until a client on every node gets an answer from `want` (any backend
 * when absent); and the slower agent's own time for its last update (`lastSync.ms` in its status).
 */
async function timedChange(s: LabState, writer: Driver, clients: Driver[], change: ServiceSpec, want?: string): Promise<{ ms: number; agentMs: number }> {
  const armed: Promise<void>[] = [];
  const seen = clients.map((c) => {
    let onArmed!: () => void;
    armed.push(new Promise<void>((r) => (onArmed = r)));
    return c.ask<Extract<Done, { atNs: string }>>(
      { op: 'watch', host: change.ip, port: change.port, ...(want ? { want } : {}), intervalMs: WATCH_INTERVAL_MS, timeoutMs: WATCH_TIMEOUT_MS },
      (e) => 'armed' in e && onArmed(),
    );
  });
  await Promise.all(armed);
  const w = await writer.ask<Extract<Done, { startNs: string }>>({ op: 'write', services: [change], chunk: 1 });
  const at = await Promise.all(seen);
  const agents = await Promise.all(s.nodes.map(async (n) => (await readStatus(nodeFiles(s, n).dir)).status.services?.lastSync?.ms ?? NaN));
  return { ms: Math.max(...at.map((x) => msSince(w.startNs, x.atNs))), agentMs: Math.max(...agents) };
}

/**
 * node1's agent stopped, its proxy tables deleted, started again: seconds until its tables have every
 * Service, and the agent's own figure for that first full sync (its status).
 */
async function fullSync(
  s: LabState,
  node: NodeState,
  services: ServiceSpec[],
  progress: (step: string) => void,
): Promise<{ seconds: number; agentMs: number }> {
  await signalNetns(node.ns, 'SIGTERM');
  await waitFor(async () => (await netnsPids(node.ns)).length === 0, { timeoutMs: 20_000, what: `the agent on ${node.name} to stop` });
  await cleanupProxy(netnsPath(node.ns));
  const started = performance.now();
  await startNodeDaemon(s, node);
  await untilProgrammed([node], services, progress);
  const seconds = (performance.now() - started) / 1000;
  const status = await waitFor(async () => (await readStatus(nodeFiles(s, node).dir)).status.services?.lastFullSync, {
    timeoutMs: 30_000,
    what: `${node.name}'s agent to report its full sync`,
  });
  return { seconds, agentMs: status.ms };
}

interface Cast {
  s: LabState;
  nodes: [NodeState, NodeState];
  pod: (name: string) => PodState;
}

function cast(s: LabState): Cast {
  const pod = (name: string) => {
    const p = s.pods.find((x) => x.name === name);
    if (!p) throw new Error(`the lab has no pod ${name}`);
    return p;
  };
  return { s, nodes: [s.nodes[0]!, s.nodes[1]!], pod };
}

export async function benchServices(o: ServicesOptions): Promise<ServicesReport> {
  const topo = await Topology.create();
  const drivers: Driver[] = [];
  try {
    o.progress(`a 2-node lab of its own (${topo.id}) with 3 pods per node`);
    await up({ name: topo.id, nodes: 2, podsPerNode: 3, backend: 'vxlan', progress: (step, ms) => o.progress(`  ${step} (${(ms / 1000).toFixed(1)} s)`) });
    const { s, nodes, pod } = cast(readState(topo.id));
    const [c1, c2, b1, b2, b3] = ['pod-1a', 'pod-2a', 'pod-1b', 'pod-2b', 'pod-2c'].map(pod) as [PodState, PodState, PodState, PodState, PodState];
    const ep = (p: PodState) => ({ ip: p.ip, node: p.node });
    const writer = new Driver('the etcd writer', s.etcd.ns, ['writer', s.etcd.endpoint]);
    const clients = [c1, c2].map((c) => new Driver(`the client in ${c.name}`, c.ns, ['client']));
    drivers.push(writer, ...clients);

    const taken = new Set((await writer.ask<Extract<Done, { ips: string[] }>>({ op: 'taken' })).ips);
    let nextIp = FIRST_IP;
    const freeIp = () => {
      while (taken.has(ipOf(nextIp))) nextIp++;
      return ipOf(nextIp++);
    };
    const svc = (name: string, endpoints: PodState[], port = APP_PORT): ServiceSpec => ({ name, ip: freeIp(), port, endpoints: endpoints.map(ep) });
    const probe = svc('probe', [b2, b3]);
    const move = svc('move', [b1, b2]);
    const iperfSvc = svc('iperf', [b2], IPERF_PORT);
    // Every Service the nodes must have: N of 2 endpoints (probe, move and N-2 fillers), iperf, and the added ones.
    const all: ServiceSpec[] = [];
    let fillers = 0;
    const rows: ServicesRow[] = [];

    const measure = async (n: number): Promise<ServicesRow> => {
      const fresh = all.length === 0 ? [iperfSvc, probe, move] : [];
      while (fillers < n - 2) fresh.push(svc(`s-${fillers++}`, [b1, b2]));
      o.progress(`N=${n}: writing ${fresh.length} Services with their EndpointSlices`);
      const w = await writer.ask<Extract<Done, { startNs: string }>>(
        { op: 'write', services: fresh, chunk: WRITE_CHUNK },
        (e) => 'progress' in e && o.progress(`  ${e.progress}`),
      );
      const writeSeconds = msSince(w.startNs, w.endNs) / 1000;
      all.push(...fresh);
      o.progress(`N=${n}: waiting for both nodes to program them`);
      await untilProgrammed(nodes, all, o.progress);
      const programmedSeconds = msSince(w.startNs, String(process.hrtime.bigint())) / 1000;
      const agentRss = await agentRssMiB(nodes);
      const size = await ruleset(nodes[0]);

      o.progress(`N=${n}: ${o.connects} connects from ${c1.name} to the probe's ClusterIP and to ${b2.name} directly`);
      const conn = await clients[0]!.ask<Extract<Done, { samples: number[][] }>>({
        op: 'connect',
        targets: [
          { host: probe.ip, port: probe.port },
          { host: b2.ip, port: APP_PORT },
        ],
        count: o.connects,
        warmup: 20,
      });
      const [viaService, direct] = conn.samples as [number[], number[]];

      o.progress(`N=${n}: ${o.changes} rounds of adding a Service and of moving an endpoint`);
      const adds: number[] = [];
      const moves: number[] = [];
      const agentMs: number[] = [];
      for (let r = 0; r < o.changes; r++) {
        const added = svc(`add-${n}-${r}`, [b1, b2]);
        const add = await timedChange(s, writer, clients, added);
        all.push(added);
        const to = move.endpoints[1]!.ip === b2.ip ? b3 : b2;
        move.endpoints = [ep(b1), ep(to)];
        const moved = await timedChange(s, writer, clients, move, to.name);
        adds.push(add.ms);
        moves.push(moved.ms);
        agentMs.push(add.agentMs, moved.agentMs);
      }

      o.progress(`N=${n}: iperf3 ${c1.name} → ${b2.name}, by ClusterIP and by its own IP (${o.iperfRounds} x ${o.iperfSeconds} s each)`);
      const viaIp: number[] = [];
      const viaCluster: number[] = [];
      for (let r = 0; r < o.iperfRounds; r++) {
        viaIp.push(await iperf(b2.ns, c1.ns, b2.ip, o.iperfSeconds));
        viaCluster.push(await iperf(b2.ns, c1.ns, b2.ip, o.iperfSeconds, iperfSvc.ip));
      }

      o.progress(`N=${n}: full sync: ${nodes[0].name}'s agent restarted on an empty table`);
      const full = await fullSync(s, nodes[0], all, o.progress);
      const [clusterIpGbps, podIpGbps] = [median(viaCluster), median(viaIp)];
      return {
        services: n,
        writeSeconds,
        programmedSeconds,
        connectP50Ms: percentile(viaService, 50),
        connectP99Ms: percentile(viaService, 99),
        directP50Ms: percentile(direct, 50),
        directP99Ms: percentile(direct, 99),
        connectFailures: conn.failures,
        addMs: median(adds),
        addMaxMs: Math.max(...adds),
        moveMs: median(moves),
        moveMaxMs: Math.max(...moves),
        agentChangeMs: median(agentMs),
        fullSyncSeconds: full.seconds,
        agentFullSyncMs: full.agentMs,
        clusterIpGbps,
        podIpGbps,
        throughputRatio: clusterIpGbps / podIpGbps,
        agentRssMiB: agentRss,
        ...size,
      };
    };
    // A size that fails ends the run, but what the smaller ones measured is still the report.
    let failed: string[] = [];
    for (const n of o.sizes) {
      try {
        rows.push(await measure(n));
      } catch (e) {
        failed = [`N=${n} failed, so it and any larger N are not in the report: ${(e as Error).message}`];
        break;
      }
    }
    const { bars, problems } = judge(rows);
    return {
      bench: 'services',
      connects: o.connects,
      changes: o.changes,
      iperfSeconds: o.iperfSeconds,
      iperfRounds: o.iperfRounds,
      rows,
      ...outcome(bars, [...failed, ...problems]),
    };
  } finally {
    for (const d of drivers) d.stop();
    await down(topo.id);
    await topo.destroy();
  }
}

/** The bars: the largest N against N = 10 (the first row), and throughput at every N. */
export function judge(rows: ServicesRow[]): Outcome {
  const base = rows[0];
  const top = rows[rows.length - 1];
  const bars: Bar[] = [];
  if (base && top && top !== base) {
    const ratio = (what: string, k: keyof ServicesRow, bar: number, goal: number) => {
      const value = top[k] / base[k];
      bars.push({ what: `${what} at ${top.services} vs ${base.services}`, bar: `≤ ${bar}x`, goal: `≤ ${goal}x`, value, met: value <= bar });
    };
    ratio('connect p50', 'connectP50Ms', CONNECT_BAR, CONNECT_GOAL);
    ratio('connect p99', 'connectP99Ms', CONNECT_BAR, CONNECT_GOAL);
    ratio('add a Service', 'addMs', CHANGE_BAR, CHANGE_GOAL);
    ratio('move an endpoint', 'moveMs', CHANGE_BAR, CHANGE_GOAL);
  }
  for (const x of rows) {
    bars.push({
      what: `ClusterIP/pod IP throughput at ${x.services}`,
      bar: `≥ ${THROUGHPUT_BAR}`,
      goal: `≥ ${THROUGHPUT_GOAL}`,
      value: x.throughputRatio,
      met: x.throughputRatio >= THROUGHPUT_BAR,
    });
  }
  const problems = rows.flatMap((x) => [
    ...(x.connectFailures > 0 ? [`${x.connectFailures} connects failed at N=${x.services}`] : []),
    ...missing(
      Object.fromEntries(
        (['connectP50Ms', 'connectP99Ms', 'addMs', 'moveMs', 'fullSyncSeconds', 'throughputRatio', 'agentRssMiB'] as const).map((k) => [
          `${k} at N=${x.services}`,
          x[k],
        ]),
      ),
    ),
  ]);
  return outcome(bars, problems);
}

export function formatServicesReport(r: ServicesReport): string {
  const base = r.rows[0];
  const x10 = (v: number, k: keyof ServicesRow) => (base ? `${(v / base[k]).toFixed(2)}x` : '-');
  return [
    `weft bench services: 2 nodes, N Services of 2 endpoints each; every figure against N=${base?.services ?? '?'} in the same run`,
    `connect: ${r.connects} TCP connects pod-1a → the probe's ClusterIP (node2 backends), alternating with the same to one backend's own IP ("direct");`,
    `  svc/direct vs 10: the ClusterIP's cost over the direct path at N against the same at 10, which the machine's load at either moment cancels out of`,
    `add/move: median of ${r.changes} rounds of the slower node, from the etcd write until a pod on each node gets an answer through it; agent ms: the proxy's own time per change`,
    table(
      [
        'N',
        'connect p50 ms',
        'vs 10',
        'p99 ms',
        'vs 10',
        'direct p50',
        'p99',
        'p50 svc/direct vs 10',
        'add ms',
        'vs 10',
        'max',
        'move ms',
        'vs 10',
        'max',
        'agent ms',
      ],
      r.rows.map((x) => [
        String(x.services),
        x.connectP50Ms,
        x10(x.connectP50Ms, 'connectP50Ms'),
        x.connectP99Ms,
        x10(x.connectP99Ms, 'connectP99Ms'),
        x.directP50Ms,
        x.directP99Ms,
        base ? `${(x.connectP50Ms / x.directP50Ms / (base.connectP50Ms / base.directP50Ms)).toFixed(2)}x` : '-',
        x.addMs,
        x10(x.addMs, 'addMs'),
        x.addMaxMs,
        x.moveMs,
        x10(x.moveMs, 'moveMs'),
        x.moveMaxMs,
        x.agentChangeMs,
      ]),
    ),
    '',
    table(
      [
        'N',
        'write s',
        'on nodes s',
        'full sync s',
        'agent ms',
        'svc Gbit/s',
        'pod Gbit/s',
        'svc/pod',
        'agent MiB',
        'vs 10',
        'nft KiB',
        'chains',
        'rules',
        'elements',
      ],
      r.rows.map((x) => [
        String(x.services),
        x.writeSeconds,
        x.programmedSeconds,
        x.fullSyncSeconds,
        x.agentFullSyncMs,
        x.clusterIpGbps,
        x.podIpGbps,
        x.throughputRatio.toFixed(2),
        x.agentRssMiB,
        x10(x.agentRssMiB, 'agentRssMiB'),
        x.rulesetBytes / 1024,
        String(x.chains),
        String(x.rules),
        String(x.elements),
      ]),
    ),
  ].join('\n');
}
