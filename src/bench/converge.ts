import { fileURLToPath } from 'node:url';
import { down, execIn, readState, up } from '../lab/lab.js';
import { Topology } from '../topo/topology.js';
import type { ConvergeRound } from './converge-driver.js';
import { table } from '../cli/format.js';
import { missing, outcome, percentile, type Outcome } from './report.js';

const DRIVER = fileURLToPath(new URL('./converge-driver.js', import.meta.url));

/** Bar and goal for the p95 at 10 nodes (issue 8); other sizes are reported against the same figures. */
export const BAR_MS = 100;
export const GOAL_MS = 50;
const BAR_NODES = 10;

export interface ConvergeRun {
  nodes: number;
  addP50: number;
  addP95: number;
  removeP50: number;
  removeP95: number;
}

export interface ConvergeReport extends Outcome {
  bench: 'converge';
  rounds: number;
  runs: ConvergeRun[];
  barMs: number;
  goalMs: number;
  /** Every p95 at 10 nodes is within the goal (bars: see `bars`). */
  goalMet: boolean;
}

/** One lab of `nodes` nodes: `rounds` leases added and removed, timed until every node has (or has dropped) the route. */
async function run(nodes: number, rounds: number, progress: (step: string) => void): Promise<ConvergeRun> {
  const topo = await Topology.create();
  try {
    await up({
      name: topo.id,
      nodes,
      podsPerNode: 0,
      backend: 'vxlan',
      progress: (step, ms) => progress(`lab of ${nodes}: ${step} (${(ms / 1000).toFixed(1)} s)`),
    });
    progress(`${nodes} nodes: ${rounds} rounds of a lease added and removed`);
    const s = readState(topo.id);
    const input = { endpoint: s.etcd.endpoint, prefix: '/coreos.com/network', nodes: s.nodes.map((n) => n.ns), rounds };
    const { stdout } = await execIn(s.etcd.ns, [process.execPath, DRIVER, JSON.stringify(input)]);
    const r = JSON.parse(stdout) as ConvergeRound[];
    const add = r.map((x) => x.addMs);
    const remove = r.map((x) => x.removeMs);
    return { nodes, addP50: percentile(add, 50), addP95: percentile(add, 95), removeP50: percentile(remove, 50), removeP95: percentile(remove, 95) };
  } finally {
    await down(topo.id);
    await topo.destroy();
  }
}

/** Time from a lease appearing (or going) in etcd to every node having (or dropping) its route, for each lab size. */
export async function benchConverge(sizes: number[], rounds: number, progress: (step: string) => void): Promise<ConvergeReport> {
  const runs: ConvergeRun[] = [];
  for (const nodes of sizes) runs.push(await run(nodes, rounds, progress));
  const bars = runs.flatMap((r) =>
    (['addP95', 'removeP95'] as const).map((k) => ({
      what: `${r.nodes} nodes, lease ${k === 'addP95' ? 'added' : 'removed'} p95 (ms)`,
      bar: r.nodes === BAR_NODES ? `≤ ${BAR_MS} ms` : `≤ ${BAR_MS} ms (set for ${BAR_NODES} nodes)`,
      goal: `≤ ${GOAL_MS} ms`,
      value: r[k],
      met: r[k] <= BAR_MS,
    })),
  );
  const atBar = runs.filter((r) => r.nodes === BAR_NODES);
  const goalMet = atBar.length > 0 && atBar.every((r) => r.addP95 <= GOAL_MS && r.removeP95 <= GOAL_MS);
  const problems = runs.flatMap((r) => missing({ [`${r.nodes} nodes addP95`]: r.addP95, [`${r.nodes} nodes removeP95`]: r.removeP95 }));
  return { bench: 'converge', rounds, runs, barMs: BAR_MS, goalMs: GOAL_MS, goalMet, ...outcome(bars, problems) };
}

export function formatConvergeReport(r: ConvergeReport): string {
  const rel = (v: number, to: number) => `${(v / to).toFixed(2)}x`;
  return [
    `weft bench converge: ${r.rounds} rounds per lab; ms until every node has (or has dropped) the route (bar p95 ≤ ${r.barMs} at ${BAR_NODES} nodes, goal ≤ ${r.goalMs})`,
    table(
      ['nodes', 'event', 'p50 ms', 'p95 ms', 'p95 vs bar', 'p95 vs goal'],
      r.runs.flatMap((x) => [
        [String(x.nodes), 'lease added', x.addP50, x.addP95, rel(x.addP95, r.barMs), rel(x.addP95, r.goalMs)],
        [String(x.nodes), 'lease removed', x.removeP50, x.removeP95, rel(x.removeP95, r.barMs), rel(x.removeP95, r.goalMs)],
      ]),
    ),
  ].join('\n');
}
