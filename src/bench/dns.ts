import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { table } from '../cli/format.js';
import { down, readState, up, type PodState } from '../lab/lab.js';
import { DEFAULT_CLUSTER_DNS } from '../agent/dns.js';
import { Topology } from '../topo/topology.js';
import { missing, outcome, percentile, type Outcome } from './report.js';

const DRIVER = fileURLToPath(new URL('./dns-driver.js', import.meta.url));
const WEFT_PORT = 5353;
const NSD_PORT = 5354;
export const BAR_RATIO = 0.25;
export const GOAL_RATIO = 0.5;
export const RESOLVABLE_BAR_MS = 100;
/** The latency run: dnsperf at a fixed moderate rate, one line per query (-v). */
const LATENCY_QPS = 5000;
const WATCH_INTERVAL_MS = 2;
const WATCH_TIMEOUT_MS = 10_000;
const LAB_NAMESPACE = 'bench';

export interface DnsperfRun {
  qps: number;
  sent: number;
  lost: number;
  avgMs: number;
  maxMs: number;
  /** From the second, short run at LATENCY_QPS (dnsperf -v: every query's latency). */
  p50Ms: number;
  p99Ms: number;
}

export interface DnsReport extends Outcome {
  bench: 'dns';
  services: number;
  seconds: number;
  queries: string;
  weft: DnsperfRun;
  nsd: DnsperfRun;
  ratio: number;
  /** Heap the table of `services` Services takes in the Weft server, and its whole RSS. */
  weftHeapMB: number;
  weftRssMB: number;
  pinned: boolean;
  /** The p50/p99 run: seconds per server at `latencyQps`. */
  latencySeconds: number;
  latencyQps: number;
  /** In a 2-node lab: a ClusterIP Service written to etcd, until a pod on every node resolves it through its node's DNS. */
  rounds: number;
  resolvableP50Ms: number;
  resolvableP95Ms: number;
  resolvableMaxMs: number;
  /**
   * The same rounds from the write's start (the Registry's whole apply: checks, the ClusterIP's
   * reservation, then the Service's put), and that apply's own time. The put commits somewhere in
   * between, so the figures above can be a little low (even below 0: a node may answer before the
   * writer hears back from etcd) and these are high.
   */
  fromStartP50Ms: number;
  fromStartP95Ms: number;
  writeP50Ms: number;
}

/** dnsperf's summary lines → figures (p50/p99 come from parseLatencies, on another run). */
export function parseDnsperf(text: string): Omit<DnsperfRun, 'p50Ms' | 'p99Ms'> {
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    maxMs: num(/Average Latency \(s\):.*max ([\d.]+)/) * 1000,
  };
}

/** `dnsperf -v` prints one line per answered query, `> NOERROR name A 0.000123` (latency in s) → p50/p99 in ms. */
export function parseLatencies(text: string): { p50Ms: number; p99Ms: number; answered: number } {
  const ms: number[] = [];
  for (const m of text.matchAll(/^> \S+ .* (\d+\.\d+)$/gm)) ms.push(Number(m[1]) * 1000);
  return { p50Ms: percentile(ms, 50), p99Ms: percentile(ms, 99), answered: ms.length };
}

/** The same records as the Weft driver serves, as a zone file; and dnsperf's queries: 50% A, 25% SRV, 25% missing names. */
function files(dir: string, services: number): { zone: string; queries: string; conf: string } {
  const zone = [
    '$ORIGIN cluster.local.',
    '$TTL 5',
    '@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5',
    '@ IN NS ns.dns.cluster.local.',
  ];
  for (let i = 0; i < services; i++) {
    const ns = `ns-${i % 100}`;
    zone.push(`svc-${i}.${ns}.svc IN A 10.96.${(i >> 8) & 255}.${i & 255}`, `_http._tcp.svc-${i}.${ns}.svc IN SRV 0 100 80 svc-${i}.${ns}.svc.cluster.local.`);
  }
  const queries: string[] = [];
  let seed = 1;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  for (let k = 0; k < 100_000; k++) {
    const i = rand(services);
    const ns = `ns-${i % 100}`;
    const r = rand(4);
    queries.push(
      r < 2
        ? `svc-${i}.${ns}.svc.cluster.local A`
        : r === 2
          ? `_http._tcp.svc-${i}.${ns}.svc.cluster.local SRV`
          : `missing-${rand(1e6)}.${ns}.svc.cluster.local A`,
    );
  }
  const paths = { zone: join(dir, 'cluster.local.zone'), queries: join(dir, 'queries.txt'), conf: join(dir, 'nsd.conf') };
  writeFileSync(paths.zone, `${zone.join('\n')}\n`);
  writeFileSync(paths.queries, `${queries.join('\n')}\n`);
  writeFileSync(
    paths.conf,
    [
      'server:',
      `  ip-address: 127.0.0.1@${NSD_PORT}`,
      '  server-count: 1',
      `  zonesdir: "${dir}"`,
      '  database: ""',
      `  pidfile: "${join(dir, 'nsd.pid')}"`,
      `  xfrdfile: "${join(dir, 'xfrd.state')}"`,
      `  zonelistfile: "${join(dir, 'zone.list')}"`,
      '  username: ""',
      '  rrl-ratelimit: 0',
      '  rrl-whitelist-ratelimit: 0',
      'remote-control:',
      '  control-enable: no',
      'zone:',
      '  name: cluster.local',
      '  zonefile: cluster.local.zone',
      '',
    ].join('\n'),
  );
  return paths;
}

/** A process of dns-driver.js in a lab namespace, read one JSON line at a time. */
class Role {
  readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private waiting?: () => void;
  private stderr = '';
  /** Its stdout read to the end and the process gone ('close': no line can come after it). */
  private closed = false;

  constructor(ns: string, args: string[]) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, DRIVER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-1000)));
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      this.lines.push(l);
      this.waiting?.();
    });
    this.child.on('close', () => {
      this.closed = true;
      this.waiting?.();
    });
  }

  /** The next line as JSON; throws on {error}, on the process's end, or after timeoutMs. */
  async next<T>(timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.closed) throw new Error(`${what}: the driver ended: ${this.stderr.trim() || 'no output'}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: nothing within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiting = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiting = undefined;
    }
    const x = JSON.parse(this.lines.shift()!) as T & { error?: string };
    if (x.error) throw new Error(`${what}: ${x.error}`);
    return x;
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill();
  }
}

/**
 * `rounds` times: a watcher in one pod of each node asks its node's DNS (10.96.0.10) for a new
 * Service's name every 2 ms; the writer in etcd's namespace writes the Service; the round's figure is
 * the slower node's first answer with the record, less the moment the write returned (committed).
 */
async function applyToResolvable(
  rounds: number,
  progress: (s: string) => void,
  labName: string,
): Promise<{ fromEnd: number[]; fromStart: number[]; write: number[] }> {
  progress(`a 2-node lab of its own (${labName}): apply → resolvable on every node, ${rounds} rounds`);
  const roles: Role[] = [];
  try {
    await up({ name: labName, nodes: 2, podsPerNode: 1, backend: 'vxlan', progress: (step, ms) => progress(`  ${step} (${(ms / 1000).toFixed(1)} s)`) });
    const s = readState(labName);
    const watchers = s.nodes.map((n): PodState => {
      const p = s.pods.find((x) => x.node === n.name);
      if (!p) throw new Error(`the lab has no pod on ${n.name}`);
      return p;
    });
    const writer = new Role(s.etcd.ns, ['writer', s.etcd.endpoint]);
    roles.push(writer);
    await writer.next(30_000, 'the etcd writer');
    const samples = { fromEnd: [] as number[], fromStart: [] as number[], write: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      const name = `dns-${r}`;
      const fqdn = `${name}.${LAB_NAMESPACE}.svc.cluster.local`;
      const ws = watchers.map((p) => new Role(p.ns, ['watch', fqdn, DEFAULT_CLUSTER_DNS, String(WATCH_INTERVAL_MS), String(WATCH_TIMEOUT_MS)]));
      roles.push(...ws);
      await Promise.all(ws.map((w, i) => w.next(WATCH_TIMEOUT_MS, `the watcher in ${watchers[i]!.name}`)));
      writer.child.stdin!.write(`${JSON.stringify({ name, namespace: LAB_NAMESPACE })}\n`);
      const w = await writer.next<{ startNs: string; endNs: string }>(30_000, `writing Service ${name}`);
      const at = await Promise.all(ws.map((x, i) => x.next<{ atNs: string }>(WATCH_TIMEOUT_MS, `resolving ${fqdn} in ${watchers[i]!.name}`)));
      const last = at.map((a) => BigInt(a.atNs)).reduce((a, b) => (a > b ? a : b));
      const ms = (from: string) => Number(last - BigInt(from)) / 1e6;
      samples.fromEnd.push(ms(w.endNs));
      samples.fromStart.push(ms(w.startNs));
      samples.write.push(ms(w.startNs) - ms(w.endNs));
      progress(`  round ${r + 1}: ${ms(w.endNs).toFixed(1)} ms from the write's return (${ms(w.startNs).toFixed(1)} ms from its start)`);
      for (const x of ws) x.stop();
    }
    return samples;
  } finally {
    for (const x of roles) x.stop();
    await down(labName);
  }
}

/**
 * dnsperf against Weft's ClusterDns and against NSD serving the same records, one after the other
 * in a namespace of the run, each server pinned to core 0 and dnsperf to core 1 (when there are two):
 * a run at full speed for qps and lost queries, then a short one at a fixed rate for p50/p99. Then
 * in a 2-node lab of the run's own: from a Service's write until every node's DNS answers for it.
 */
export async function benchDns(o: {
  services: number;
  seconds: number;
  latencySeconds: number;
  rounds: number;
  progress: (s: string) => void;
}): Promise<DnsReport> {
  const topo = await Topology.create();
  const pinned = cpus().length >= 2;
  const pin = (core: number, argv: string[]) => (pinned ? ['taskset', '-c', String(core), ...argv] : argv);
  try {
    await topo.netns('dns');
    const f = files(topo.dir, o.services);
    o.progress(`weft: ${o.services} Services`);
    const weft = topo.spawn('dns', pin(0, [process.execPath, DRIVER, 'serve', String(o.services), String(WEFT_PORT)]));
    const ready = await new Promise<{ heapMB: number; rssMB: number }>((resolve, reject) => {
      weft.once('exit', (code) => reject(new Error(`the Weft DNS driver exited (${code})`)));
      createInterface({ input: weft.stdout! }).once('line', (l) => resolve(JSON.parse(l) as { heapMB: number; rssMB: number }));
    });
    const dnsperf = async (port: number, args: string[], seconds: number) => {
      const r = await topo.exec('dns', pin(1, ['dnsperf', '-s', '127.0.0.1', '-p', String(port), '-d', f.queries, '-l', String(seconds), ...args]), {
        timeoutMs: (seconds + 30) * 1000,
      });
      if (r.code !== 0) throw new Error(`dnsperf failed: ${r.stderr.slice(-400)}`);
      return r.stdout;
    };
    const perf = async (port: number): Promise<DnsperfRun> => {
      const run = parseDnsperf(await dnsperf(port, ['-c', '8', '-q', '500', '-S', '0'], o.seconds));
      const lat = parseLatencies(await dnsperf(port, ['-c', '8', '-Q', String(LATENCY_QPS), '-v'], o.latencySeconds));
      return { ...run, p50Ms: lat.p50Ms, p99Ms: lat.p99Ms };
    };
    const weftRun = await perf(WEFT_PORT);
    weft.kill('SIGTERM');
    o.progress('nsd: the same records as a static zone');
    const nsd = topo.spawn('dns', pin(0, ['nsd', '-d', '-c', f.conf]));
    for (let i = 0; ; i++) {
      const r = await topo.exec('dns', ['dig', '@127.0.0.1', '-p', String(NSD_PORT), '+short', '+time=1', '+tries=1', 'svc-0.ns-0.svc.cluster.local']);
      if (r.stdout.trim()) break;
      if (i > 100 || nsd.exitCode !== null) throw new Error('nsd did not start serving');
      await new Promise((r2) => setTimeout(r2, 100));
    }
    const nsdRun = await perf(NSD_PORT);
    nsd.kill('SIGTERM');
    const resolvable = await applyToResolvable(o.rounds, o.progress, topo.id);
    const ratio = weftRun.qps / nsdRun.qps;
    const [p50, p95] = [percentile(resolvable.fromEnd, 50), percentile(resolvable.fromEnd, 95)];
    const problems = missing({
      weftQps: weftRun.qps,
      nsdQps: nsdRun.qps,
      weftP50Ms: weftRun.p50Ms,
      weftP99Ms: weftRun.p99Ms,
      nsdP50Ms: nsdRun.p50Ms,
      nsdP99Ms: nsdRun.p99Ms,
      resolvableP95Ms: p95,
    });
    return {
      bench: 'dns',
      services: o.services,
      seconds: o.seconds,
      queries: '50% A, 25% SRV, 25% missing names; dnsperf -c 8 -q 500',
      weft: weftRun,
      nsd: nsdRun,
      ratio,
      weftHeapMB: ready.heapMB,
      weftRssMB: ready.rssMB,
      pinned,
      latencySeconds: o.latencySeconds,
      latencyQps: LATENCY_QPS,
      rounds: o.rounds,
      resolvableP50Ms: p50,
      resolvableP95Ms: p95,
      resolvableMaxMs: Math.max(...resolvable.fromEnd),
      fromStartP50Ms: percentile(resolvable.fromStart, 50),
      fromStartP95Ms: percentile(resolvable.fromStart, 95),
      writeP50Ms: percentile(resolvable.write, 50),
      ...outcome(
        [
          { what: 'qps vs NSD', bar: `≥ ${BAR_RATIO}× (goal ${GOAL_RATIO}×)`, value: ratio, met: ratio >= BAR_RATIO, goal: `≥ ${GOAL_RATIO}×` },
          { what: 'apply→resolvable p95', bar: `≤ ${RESOLVABLE_BAR_MS} ms`, value: p95, met: p95 <= RESOLVABLE_BAR_MS },
        ],
        problems,
      ),
    };
  } finally {
    await topo.destroy();
  }
}

export function formatDnsReport(r: DnsReport): string {
  const row = (name: string, x: DnsperfRun) => [name, x.qps, x.sent, x.lost, x.avgMs, x.maxMs, x.p50Ms, x.p99Ms];
  return [
    `${r.services} Services; ${r.queries}; ${r.seconds} s each${r.pinned ? ', servers on core 0, dnsperf on core 1' : ' (one core: not pinned)'}; p50/p99 from ${r.latencySeconds} s more at ${r.latencyQps} qps`,
    table(['server', 'qps', 'sent', 'lost', 'avg ms', 'max ms', 'p50 ms', 'p99 ms'], [row('weft', r.weft), row('nsd', r.nsd)]),
    `ratio ${r.ratio.toFixed(2)}× NSD; Weft's table of ${r.services} Services: ${r.weftHeapMB.toFixed(1)} MB heap (process RSS ${r.weftRssMB.toFixed(0)} MB)`,
    `apply → resolvable on both nodes of a 2-node lab (${r.rounds} rounds, from the etcd write's return): p50 ${r.resolvableP50Ms.toFixed(1)} ms, p95 ${r.resolvableP95Ms.toFixed(1)} ms, max ${r.resolvableMaxMs.toFixed(1)} ms; from the write's start p50 ${r.fromStartP50Ms.toFixed(1)} ms, p95 ${r.fromStartP95Ms.toFixed(1)} ms (the write itself p50 ${r.writeP50Ms.toFixed(1)} ms)`,
  ].join('\n');
}
