import { readFileSync } from 'node:fs';
import { netnsPids } from '../kernel/netns.js';
import { down, readState, up } from '../lab/lab.js';
import { verify } from '../lab/verify.js';
import { Topology } from '../topo/topology.js';
import { table } from '../cli/format.js';
import { missing, outcome, percentile, type Outcome } from './report.js';

export interface LabBenchRow {
  nodes: number;
  podsPerNode: number;
  upSeconds: number;
  verifySeconds: number;
  checks: number;
  failed: number;
  agentRssMiBP50: number;
  agentRssMiBMax: number;
  podRssMiBP50: number;
  totalRssMiB: number;
}

function rssMiB(pid: number): number {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    return kb / 1024;
  } catch {
    return 0;
  }
}

/** Brings a lab of the given size up (timed), verifies it (timed), measures memory, and takes it down. */
async function measure(id: string, nodes: number, podsPerNode: number, progress: (step: string) => void): Promise<LabBenchRow> {
  progress(`${nodes} nodes x ${podsPerNode} pods: lab up`);
  const started = performance.now();
  await up({ name: id, nodes, podsPerNode, backend: 'vxlan', progress: () => undefined });
  const upSeconds = (performance.now() - started) / 1000;
  try {
    progress(`${nodes} nodes x ${podsPerNode} pods: verify`);
    const v0 = performance.now();
    const { results } = await verify(id);
    const verifySeconds = (performance.now() - v0) / 1000;
    const s = readState(id);
    const agents = (await Promise.all(s.nodes.map((n) => netnsPids(n.ns)))).flat().map(rssMiB);
    const pods = (await Promise.all(s.pods.map((p) => netnsPids(p.ns)))).map((pids) => pids.reduce((sum, pid) => sum + rssMiB(pid), 0));
    const others = (await Promise.all([s.etcd.ns, s.outside.ns].map(netnsPids))).flat().map(rssMiB);
    return {
      nodes,
      podsPerNode,
      upSeconds,
      verifySeconds,
      checks: results.length,
      failed: results.filter((r) => !r.ok).length,
      agentRssMiBP50: percentile(agents, 50),
      agentRssMiBMax: Math.max(...agents),
      podRssMiBP50: percentile(pods, 50),
      totalRssMiB: [...agents, ...pods, ...others].reduce((a, b) => a + b, 0),
    };
  } finally {
    await down(id);
  }
}

export interface LabBenchReport extends Outcome {
  bench: 'lab';
  barUpSeconds3Nodes: number;
  rows: LabBenchRow[];
}

const BAR_UP_SECONDS_3_NODES = 20;

export async function benchLab(sizes: [number, number][], progress: (step: string) => void): Promise<LabBenchReport> {
  const topo = await Topology.create();
  try {
    const rows: LabBenchRow[] = [];
    for (const [nodes, pods] of sizes) rows.push(await measure(topo.id, nodes, pods, progress));
    const bars = rows
      .filter((x) => x.nodes === 3)
      .map((x) => ({
        what: `lab up, 3 nodes x ${x.podsPerNode} pods (s)`,
        bar: `≤ ${BAR_UP_SECONDS_3_NODES} s`,
        value: x.upSeconds,
        met: x.upSeconds <= BAR_UP_SECONDS_3_NODES,
      }));
    const problems = rows.flatMap((x) => [
      ...(x.failed > 0 ? [`verify failed ${x.failed} of ${x.checks} checks on ${x.nodes} nodes x ${x.podsPerNode} pods`] : []),
      ...missing({ [`agent RSS at ${x.nodes} nodes`]: x.agentRssMiBP50 }),
    ]);
    return { bench: 'lab', barUpSeconds3Nodes: BAR_UP_SECONDS_3_NODES, rows, ...outcome(bars, problems) };
  } finally {
    await topo.destroy();
  }
}

export function formatLabReport(r: LabBenchReport): string {
  return [
    `weft bench lab: time to a ready lab and memory (RSS, MiB); the bar for 3 nodes is ${r.barUpSeconds3Nodes} s`,
    table(
      ['nodes x pods', 'up (s)', 'vs bar', 'verify (s)', 'checks', 'failed', 'agent p50', 'agent max', 'pod p50', 'total'],
      r.rows.map((x) => [
        `${x.nodes} x ${x.podsPerNode}`,
        x.upSeconds,
        `${(x.upSeconds / r.barUpSeconds3Nodes).toFixed(2)}x`,
        x.verifySeconds,
        String(x.checks),
        String(x.failed),
        x.agentRssMiBP50,
        x.agentRssMiBMax,
        x.podRssMiBP50,
        x.totalRssMiB,
      ]),
    ),
  ].join('\n');
}
