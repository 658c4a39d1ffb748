import { fileURLToPath } from 'node:url';
import { down, execIn, readState, up } from '../lab/lab.js';
import { Topology } from '../testing/topo.js';
import type { ConvergeRound } from './converge-driver.js';
import { percentile, table } from './report.js';

const DRIVER = fileURLToPath(new URL('./converge-driver.js', import.meta.url));

export interface ConvergeReport {
  bench: 'converge';
  nodes: number;
  rounds: number;
  addP50: number;
  addP95: number;
  removeP50: number;
  removeP95: number;
  barMs: number;
  goalMs: number;
}

/** Time from a lease appearing (or going) in etcd to every node having (or dropping) its route. */
export async function benchConverge(nodes: number, rounds: number): Promise<ConvergeReport> {
  const topo = await Topology.create();
  try {
    await up({ name: topo.id, nodes, podsPerNode: 0, backend: 'vxlan', progress: () => undefined });
    const s = readState(topo.id);
    const input = { endpoint: s.etcd.endpoint, prefix: '/coreos.com/network', nodes: s.nodes.map((n) => n.ns), rounds };
    const { stdout } = await execIn(s.etcd.ns, [process.execPath, DRIVER, JSON.stringify(input)]);
    const r = JSON.parse(stdout) as ConvergeRound[];
    const add = r.map((x) => x.addMs);
    const remove = r.map((x) => x.removeMs);
    return { bench: 'converge', nodes, rounds, addP50: percentile(add, 50), addP95: percentile(add, 95), removeP50: percentile(remove, 50), removeP95: percentile(remove, 95), barMs: 2000, goalMs: 200 };
  } finally {
    await down(topo.id);
    await topo.destroy();
  }
}

export function formatConvergeReport(r: ConvergeReport): string {
  return [
    `weft bench converge: ${r.nodes} nodes, ${r.rounds} rounds; ms until every node has (or has dropped) the route (bar p95 ≤ ${r.barMs}, goal ≤ ${r.goalMs})`,
    table(
      ['event', 'p50 ms', 'p95 ms', 'p95 vs bar', 'p95 vs goal'],
      [
        ['lease added', r.addP50, r.addP95, `${(r.addP95 / r.barMs).toFixed(2)}x`, `${(r.addP95 / r.goalMs).toFixed(2)}x`],
        ['lease removed', r.removeP50, r.removeP95, `${(r.removeP95 / r.barMs).toFixed(2)}x`, `${(r.removeP95 / r.goalMs).toFixed(2)}x`],
      ],
    ),
  ].join('\n');
}
