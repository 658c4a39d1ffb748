import { readFileSync } from 'node:fs';
import { listNetns, netnsPids } from '../kernel/netns.js';
import { runtimeOf } from '../lab/build.js';
import { down, neighbourRoom, nsName, readState, up } from '../lab/lab.js';
import { tally, verify } from '../lab/verify.js';
import { Topology } from '../topo/topology.js';
import { table } from '../cli/format.js';
import { missing, outcome, percentile, type Bar, type Outcome } from './report.js';

export interface LabBenchRow {
  nodes: number;
  podsPerNode: number;
  upSeconds: number;
  verifySeconds: number;
  checks: number;
  failed: number;
  /** Checks that passed only on a second try after a timeout. */
  retried: number;
  /** verify sampled the pod pairs (above its all-pairs size) */
  sampled: boolean;
  podPairs: number;
  agentRssMiBP50: number;
  agentRssMiBMax: number;
  /** A node's runtime: the one process serving all its pods. */
  runtimeRssMiBP50: number;
  /** Each pod's share of its node's runtime (the runtime's RSS over its pods). */
  podRssMiBP50: number;
  /** Every process of the lab, summed RSS: shared pages (Node's own binary, about 45 MiB of each) count once per process. */
  totalRssMiB: number;
  /** The same processes' PSS: shared pages split among their sharers, so the sum is the memory the lab takes. */
  totalPssMiB: number;
}

function memMiB(pid: number): { rss: number; pss: number } {
  const kb = (file: string, field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/${file}`, 'utf8'))?.[1] ?? 0) / 1024;
  try {
    return { rss: kb('status', 'VmRSS'), pss: kb('smaps_rollup', 'Pss') };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Brings a lab of the given size up (timed), verifies it (timed), measures memory, and takes it down. */
async function measure(id: string, nodes: number, podsPerNode: number, progress: (step: string) => void): Promise<LabBenchRow> {
  progress(`${nodes} nodes x ${podsPerNode} pods: lab up`);
  const started = performance.now();
  try {
    await up({ name: id, nodes, podsPerNode, backend: 'vxlan', progress: () => undefined });
    const upSeconds = (performance.now() - started) / 1000;
    progress(`${nodes} nodes x ${podsPerNode} pods: verify`);
    const v0 = performance.now();
    const { results, coverage } = await verify(id);
    const counts = tally(results);
    const verifySeconds = (performance.now() - v0) / 1000;
    const s = readState(id);
    const mem = async (ns: string) => (await netnsPids(ns)).map(memMiB);
    const agents = (await Promise.all(s.nodes.map((n) => mem(n.ns)))).flat();
    const runtimes = await Promise.all(s.nodes.map(async (n) => ({ node: n.name, rss: sum((await mem(runtimeOf(s, n.name).ns)).map((m) => m.rss)) })));
    const podShare = s.pods.map((p) => {
      const r = runtimes.find((x) => x.node === p.node)!;
      return r.rss / s.pods.filter((x) => x.node === p.node).length;
    });
    const everything = (
      await Promise.all(
        listNetns()
          .filter((n) => n.startsWith(nsName(id, '')))
          .map(mem),
      )
    ).flat();
    return {
      nodes,
      podsPerNode,
      upSeconds,
      verifySeconds,
      checks: results.length,
      failed: counts.failed,
      retried: counts.retried,
      sampled: coverage.sampled,
      podPairs: coverage.pairs.sameNode + coverage.pairs.acrossNodes,
      agentRssMiBP50: percentile(
        agents.map((m) => m.rss),
        50,
      ),
      agentRssMiBMax: Math.max(...agents.map((m) => m.rss)),
      runtimeRssMiBP50: percentile(
        runtimes.map((r) => r.rss),
        50,
      ),
      podRssMiBP50: percentile(podShare, 50),
      totalRssMiB: sum(everything.map((m) => m.rss)),
      totalPssMiB: sum(everything.map((m) => m.pss)),
    };
  } finally {
    await down(id);
  }
}

export interface LabBenchReport extends Outcome {
  bench: 'lab';
  rows: LabBenchRow[];
}

/** The bars (and goals): 3x2 ready in 2 s; 100x10 ready in 120 s (60), verified in 60 s (30), in 8 GiB (4). */
const BARS = {
  up3: 2,
  up100: { bar: 120, goal: 60 },
  verify100: { bar: 60, goal: 30 },
  totalGiB100: { bar: 8, goal: 4 },
};

function bars(rows: LabBenchRow[]): Bar[] {
  const out: Bar[] = [];
  for (const x of rows.filter((r) => r.nodes === 3 && r.podsPerNode === 2)) {
    out.push({ what: 'lab up, 3 nodes x 2 pods (s)', bar: `≤ ${BARS.up3} s`, value: x.upSeconds, met: x.upSeconds <= BARS.up3 });
  }
  for (const x of rows.filter((r) => r.nodes === 100 && r.podsPerNode === 10)) {
    const gib = x.totalPssMiB / 1024;
    out.push(
      { what: 'lab up, 100 x 10 (s)', bar: `≤ ${BARS.up100.bar} s`, goal: `${BARS.up100.goal} s`, value: x.upSeconds, met: x.upSeconds <= BARS.up100.bar },
      {
        what: 'verify, 100 x 10 (s)',
        bar: `≤ ${BARS.verify100.bar} s`,
        goal: `${BARS.verify100.goal} s`,
        value: x.verifySeconds,
        met: x.verifySeconds <= BARS.verify100.bar,
      },
      {
        what: 'memory, 100 x 10 (GiB, PSS)',
        bar: `≤ ${BARS.totalGiB100.bar} GiB`,
        goal: `${BARS.totalGiB100.goal} GiB`,
        value: gib,
        met: gib <= BARS.totalGiB100.bar,
      },
    );
  }
  return out;
}

export async function benchLab(sizes: [number, number][], progress: (step: string) => void): Promise<LabBenchReport> {
  const topo = await Topology.create();
  try {
    const rows: LabBenchRow[] = [];
    const failures: string[] = [];
    for (const [nodes, pods] of sizes) {
      // One size that fails (its lab is already taken down) does not lose the others' figures.
      await measure(topo.id, nodes, pods, progress).then(
        (row) => rows.push(row),
        (e: Error) => failures.push(`${nodes} nodes x ${pods} pods: ${e.message.split('\n')[0]}`),
      );
    }
    for (const [nodes, pods] of sizes) {
      const room = neighbourRoom(nodes, pods);
      if (room) failures.push(`${nodes} nodes x ${pods} pods: ${room}`);
    }
    const problems = failures.concat(
      ...rows.map((x) => [
        ...(x.failed > 0 ? [`verify failed ${x.failed} of ${x.checks} checks on ${x.nodes} nodes x ${x.podsPerNode} pods`] : []),
        ...missing({ [`agent RSS at ${x.nodes} nodes`]: x.agentRssMiBP50, [`runtime RSS at ${x.nodes} nodes`]: x.runtimeRssMiBP50 }),
      ]),
    );
    return { bench: 'lab', rows, ...outcome(bars(rows), problems) };
  } finally {
    await topo.destroy();
  }
}

export function formatLabReport(r: LabBenchReport): string {
  return [
    'weft bench lab: time to a ready lab, verify, and memory (MiB). A node is its agent and its runtime (one process for all its pods);',
    'a pod is its share of its runtime. RSS counts pages shared between processes (Node itself) once per process; PSS splits them.',
    table(
      [
        'nodes x pods',
        'up (s)',
        'verify (s)',
        'pairs',
        'checks',
        'failed',
        'retried',
        'agent p50',
        'agent max',
        'runtime p50',
        'pod p50',
        'RSS sum',
        'PSS sum',
      ],
      r.rows.map((x) => [
        `${x.nodes} x ${x.podsPerNode}`,
        x.upSeconds,
        x.verifySeconds,
        `${x.podPairs}${x.sampled ? ' sampled' : ''}`,
        String(x.checks),
        String(x.failed),
        String(x.retried),
        x.agentRssMiBP50,
        x.agentRssMiBMax,
        x.runtimeRssMiBP50,
        x.podRssMiBP50,
        x.totalRssMiB,
        x.totalPssMiB,
      ]),
    ),
  ].join('\n');
}
