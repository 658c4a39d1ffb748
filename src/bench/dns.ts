import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { table } from '../cli/format.js';
import { Topology } from '../topo/topology.js';
import { missing, outcome, type Outcome } from './report.js';

const DRIVER = fileURLToPath(new URL('./dns-driver.js', import.meta.url));
const WEFT_PORT = 5353;
const NSD_PORT = 5354;
export const BAR_RATIO = 0.25;
export const GOAL_RATIO = 0.5;

export interface DnsperfRun {
  qps: number;
  sent: number;
  lost: number;
  avgMs: number;
  maxMs: number;
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
}

/** dnsperf's summary lines → figures. */
export function parseDnsperf(text: string): DnsperfRun {
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    maxMs: num(/Average Latency \(s\):.*max ([\d.]+)/) * 1000,
  };
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

/**
 * dnsperf against Weft's ClusterDns and against NSD serving the same records, one after the other
 * in a namespace of the run, each server pinned to core 0 and dnsperf to core 1 (when there are two).
 */
export async function benchDns(o: { services: number; seconds: number; progress: (s: string) => void }): Promise<DnsReport> {
  const topo = await Topology.create();
  const pinned = cpus().length >= 2;
  const pin = (core: number, argv: string[]) => (pinned ? ['taskset', '-c', String(core), ...argv] : argv);
  try {
    await topo.netns('dns');
    const f = files(topo.dir, o.services);
    o.progress(`weft: ${o.services} Services`);
    const weft = topo.spawn('dns', pin(0, [process.execPath, DRIVER, String(o.services), String(WEFT_PORT)]));
    const ready = await new Promise<{ heapMB: number; rssMB: number }>((resolve, reject) => {
      weft.once('exit', (code) => reject(new Error(`the Weft DNS driver exited (${code})`)));
      createInterface({ input: weft.stdout! }).once('line', (l) => resolve(JSON.parse(l) as { heapMB: number; rssMB: number }));
    });
    const perf = async (port: number) => {
      const r = await topo.exec(
        'dns',
        pin(1, ['dnsperf', '-s', '127.0.0.1', '-p', String(port), '-d', f.queries, '-l', String(o.seconds), '-c', '8', '-q', '500', '-S', '0']),
        { timeoutMs: (o.seconds + 30) * 1000 },
      );
      if (r.code !== 0) throw new Error(`dnsperf failed: ${r.stderr.slice(-400)}`);
      return parseDnsperf(r.stdout);
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
    const ratio = weftRun.qps / nsdRun.qps;
    const problems = missing({ weftQps: weftRun.qps, nsdQps: nsdRun.qps });
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
      ...outcome(
        [{ what: 'qps vs NSD', bar: `≥ ${BAR_RATIO}× (goal ${GOAL_RATIO}×)`, value: ratio, met: ratio >= BAR_RATIO, goal: `≥ ${GOAL_RATIO}×` }],
        problems,
      ),
    };
  } finally {
    await topo.destroy();
  }
}

export function formatDnsReport(r: DnsReport): string {
  const row = (name: string, x: DnsperfRun) => [name, x.qps, x.sent, x.lost, x.avgMs, x.maxMs];
  return [
    `${r.services} Services; ${r.queries}; ${r.seconds} s each${r.pinned ? ', servers on core 0, dnsperf on core 1' : ' (one core: not pinned)'}`,
    table(['server', 'qps', 'sent', 'lost', 'avg ms', 'max ms'], [row('weft', r.weft), row('nsd', r.nsd)]),
    `ratio ${r.ratio.toFixed(2)}× NSD; Weft's table of ${r.services} Services: ${r.weftHeapMB.toFixed(1)} MB heap (process RSS ${r.weftRssMB.toFixed(0)} MB)`,
  ].join('\n');
}
