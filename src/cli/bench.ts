import { writeFileSync } from 'node:fs';
import type { CniMode } from '../bench/datapath.js';
import type { Outcome } from '../bench/report.js';
import type { Backend } from '../lab/lab.js';
import { LAB_SIZE } from '../lab/state.js';
import { JSON_OPTION, type Args, type CommandSpec, type GroupSpec, type OptionSpec } from './command.js';
import { table } from './format.js';
import { print, printJson, progressTo, warn } from './output.js';
import { UsageError } from './usage.js';

const QUICK: OptionSpec = { name: 'quick', brief: true, description: 'a small, fast run (a smoke test, not a measurement)' };
const REPORT: OptionSpec = { name: 'report', value: 'FILE', description: 'also write the report as JSON to FILE' };
const SIZE = { min: 1, max: 500 };

/**
 * Prints a bench's report (its table and its bars, or JSON with --json), writes --report, and
 * exits 1 only when the run is broken; a bar not met is reported, not an error.
 */
function finish<R extends Outcome>(a: Args, report: R, format: (r: R) => string): number {
  if (a.bool('json')) printJson(report);
  else {
    print(format(report));
    if (report.bars.length)
      print(
        `\n${table(
          ['bar', 'value', 'needed', 'met'],
          report.bars.map((b) => [b.what, b.value, b.bar, b.met ? 'yes' : 'NO']),
        )}`,
      );
    for (const p of report.problems) print(`broken: ${p}`);
  }
  const file = a.str('report');
  if (file) writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  return report.ok ? 0 : 1;
}

/** A number option whose default depends on --quick. */
const sized = (a: Args, name: string, full: number, quick: number) => a.num(name) ?? (a.bool('quick') ? quick : full);

export const benchGroup: GroupSpec = { path: ['bench'], summary: 'measure Weft against a reference in the same run (a table, or JSON with --json)' };

export const benchCommands: CommandSpec[] = [
  {
    path: ['bench', 'cni'],
    summary: 'CNI ADD/DEL latency and CPU vs the reference plugins',
    options: [
      QUICK,
      { name: 'pods', value: 'N', int: SIZE, brief: true, description: 'sequential ADDs and DELs per plugin (default: 100, or 5 with --quick)' },
      { name: 'concurrent', value: 'N', int: SIZE, description: 'ADDs at once in the burst (default: 32, or 4 with --quick)' },
      JSON_OPTION,
      REPORT,
    ],
    run: async (a) => {
      const progress = progressTo(a.bool('json'));
      const { benchCni, formatCniReport } = await import('../bench/cni.js');
      const report = await benchCni({ sequential: sized(a, 'pods', 100, 5), concurrent: sized(a, 'concurrent', 32, 4), progress });
      return finish(a, report, formatCniReport);
    },
  },
  {
    path: ['bench', 'datapath'],
    summary: "pod-to-pod throughput and RTT vs flannel's path built by hand (no firewall) and the raw underlay",
    options: [
      QUICK,
      {
        name: 'backends',
        value: 'LIST',
        listOf: ['vxlan', 'host-gw', 'udp'],
        default: 'vxlan,host-gw,udp',
        brief: true,
        description: 'the backends to measure',
      },
      { name: 'seconds', value: 'S', int: { min: 1, max: 60 }, description: 'length of each iperf3 run (default: 5, or 1 with --quick)' },
      {
        name: 'rounds',
        value: 'N',
        int: { min: 1, max: 50 },
        description: 'alternating raw, reference and Weft runs; each takes the median (default: 3, or 1 with --quick)',
      },
      {
        name: 'cni-modes',
        value: 'LIST',
        listOf: ['bridge', 'routed'],
        default: 'bridge',
        description: "the CNI plugin's modes to measure, each in a lab of its own beside the same reference",
      },
      JSON_OPTION,
      REPORT,
    ],
    run: async (a) => {
      const { benchDatapath, formatDatapathReport } = await import('../bench/datapath.js');
      const report = await benchDatapath({
        backends: a.list('backends') as Backend[],
        modes: a.list('cni-modes') as CniMode[],
        seconds: sized(a, 'seconds', 5, 1),
        rounds: sized(a, 'rounds', 3, 1),
        progress: progressTo(a.bool('json')),
      });
      return finish(a, report, formatDatapathReport);
    },
  },
  {
    path: ['bench', 'dns'],
    summary: "the cluster DNS's qps and latency vs NSD serving the same records (dnsperf), and apply → resolvable in a 2-node lab",
    options: [
      QUICK,
      {
        name: 'services',
        value: 'N',
        int: { min: 1, max: 60_000 },
        brief: true,
        description: 'ClusterIP Services in the zone (default: 10000, or 1000 with --quick)',
      },
      { name: 'seconds', value: 'S', int: { min: 1, max: 600 }, description: 'dnsperf run per server (default: 10, or 2 with --quick)' },
      {
        name: 'rounds',
        value: 'N',
        int: { min: 1, max: 200 },
        description: 'Services applied, each timed until every node resolves it (default: 20, or 5 with --quick)',
      },
      JSON_OPTION,
      REPORT,
    ],
    run: async (a) => {
      const progress = progressTo(a.bool('json'));
      const { benchDns, formatDnsReport } = await import('../bench/dns.js');
      const report = await benchDns({
        services: sized(a, 'services', 10_000, 1000),
        seconds: sized(a, 'seconds', 10, 2),
        latencySeconds: a.bool('quick') ? 1 : 3,
        rounds: sized(a, 'rounds', 20, 5),
        progress,
      });
      return finish(a, report, formatDnsReport);
    },
  },
  {
    path: ['bench', 'converge'],
    summary: "time until every node has a new lease's route",
    options: [
      QUICK,
      {
        name: 'nodes',
        value: 'N',
        int: { min: 2, max: 100 },
        brief: true,
        description: 'nodes in the lab (default: labs of 10, 30 and 100; 3 with --quick)',
      },
      { name: 'rounds', value: 'N', int: SIZE, description: 'leases added and removed (default: 20, or 3 with --quick)' },
      { name: 'etcd-members', value: 'N', int: LAB_SIZE.etcdMembers, default: '1', description: "members of the lab's etcd cluster" },
      {
        name: 'steady',
        value: 'SECONDS',
        int: { min: 1, max: 600 },
        description: "how long etcd's writes are counted in a quiet lab (default: 30, or 5 with --quick)",
      },
      JSON_OPTION,
      REPORT,
    ],
    run: async (a) => {
      const { benchConverge, formatConvergeReport } = await import('../bench/converge.js');
      const report = await benchConverge(a.num('nodes') !== undefined ? [a.num('nodes')!] : a.bool('quick') ? [3] : [10, 30, 100], sized(a, 'rounds', 20, 3), {
        steadySeconds: sized(a, 'steady', 30, 5),
        etcdMembers: a.num('etcd-members')!,
        progress: progressTo(a.bool('json')),
      });
      return finish(a, report, formatConvergeReport);
    },
  },
  {
    path: ['bench', 'lab'],
    summary: 'time to a ready lab, verify and memory (3x2, 20x10, 100x10 nodes x pods)',
    details: 'A failed verify check makes the run broken (exit 1). Each size is brought up, verified, measured and taken down before the next.',
    options: [
      QUICK,
      {
        name: 'sizes',
        value: 'NxP,...',
        description: 'the labs to measure, nodes x pods per node (default: 3x2,20x10,100x10; 3x2 with --quick)',
      },
      JSON_OPTION,
      REPORT,
    ],
    run: async (a) => {
      const text = a.str('sizes') ?? (a.bool('quick') ? '3x2' : '3x2,20x10,100x10');
      const sizes = text.split(',').map((item) => {
        const m = /^(\d+)x(\d+)$/.exec(item);
        if (!m || Number(m[1]) < 1 || Number(m[1]) > 200 || Number(m[2]) > 50)
          throw new UsageError(`--sizes takes NODESxPODS items (1-200 x 0-50) separated by commas, not "${item}"`);
        return [Number(m[1]), Number(m[2])] as [number, number];
      });
      const { benchLab, formatLabReport } = await import('../bench/lab.js');
      const report = await benchLab(sizes, progressTo(a.bool('json')));
      return finish(a, report, formatLabReport);
    },
  },
  {
    path: ['bench', 'services'],
    summary: 'the Service proxy at 10 to 30,000 Services: connect time, one change, sync, throughput, memory, ruleset',
    details:
      'Builds a 2-node lab of its own and removes it at the end (on a failure or SIGINT too). Every figure is set against N=10 in the same run; progress goes to stderr.',
    options: [
      QUICK,
      { name: 'connects', value: 'N', int: { min: 50, max: 20_000 }, description: 'TCP connects per target at each N (default: 2000, or 300 with --quick)' },
      { name: 'rounds', value: 'N', int: { min: 1, max: 50 }, description: 'rounds of each change at each N (default: 5, or 3 with --quick)' },
      { name: 'seconds', value: 'S', int: { min: 1, max: 60 }, description: 'length of each iperf3 run (default: 3, or 1 with --quick)' },
      JSON_OPTION,
      REPORT,
    ],
    run: async (a) => {
      const { benchServices, formatServicesReport } = await import('../bench/services.js');
      const report = await benchServices({
        sizes: a.bool('quick') ? [10, 1000] : [10, 1000, 10_000, 30_000],
        connects: sized(a, 'connects', 2000, 300),
        changes: sized(a, 'rounds', 5, 3),
        iperfSeconds: sized(a, 'seconds', 3, 1),
        iperfRounds: a.bool('quick') ? 1 : 3,
        progress: warn,
      });
      return finish(a, report, formatServicesReport);
    },
  },
];
