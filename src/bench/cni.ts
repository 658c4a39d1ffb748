import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installPlugins } from '../cni/install.js';
import { waitFor } from '../util/wait.js';
import { Topology } from '../topo/topology.js';
import type { DriverInput, Variant, VariantResult } from './cni-driver.js';
import { table } from '../cli/format.js';
import { missing, outcome, type Outcome } from './report.js';

const DRIVER = fileURLToPath(new URL('./cni-driver.js', import.meta.url));
const WEFT = fileURLToPath(new URL('../../../bin/weft', import.meta.url));
const REFERENCE_DIR = '/usr/lib/cni';

export interface CniBenchOptions {
  sequential: number;
  concurrent: number;
  progress: (step: string) => void;
}

export interface CniBenchReport extends Outcome {
  bench: 'cni';
  sequential: number;
  concurrent: number;
  results: (VariantResult & { addRatio: number; delRatio: number; cpuRatio: number; concurrentRatio: number })[];
}

/**
 * ADD/DEL latency, CPU per ADD and a concurrent burst, for the reference bridge + host-local pair and
 * for weft (served and direct), on the same kind of namespaces in the same run.
 */
export async function benchCni(o: CniBenchOptions): Promise<CniBenchReport> {
  const topo = await Topology.create();
  try {
    o.progress(`creating ${Math.max(o.sequential, o.concurrent) + 1} namespaces`);
    await topo.netns('host');
    const podCount = Math.max(o.sequential, o.concurrent);
    const pods: string[] = [];
    for (let i = 0; i < podCount; i++) {
      await topo.netns(`p${i}`);
      pods.push(topo.name(`p${i}`));
    }
    const bin = join(topo.dir, 'bin');
    installPlugins(bin);
    mkdirSync(join(topo.dir, 'ipam'), { recursive: true });
    const socket = join(topo.dir, 'cni.sock');
    const server = topo.spawn('host', [process.execPath, WEFT, 'cni', 'serve', '--quiet', '--socket', socket]);
    await waitFor(() => existsSync(socket), { timeoutMs: 10_000, intervalMs: 20, what: `weft cni serve to open ${socket}` });

    const common = { cniVersion: '1.0.0', isGateway: true };
    const ipam = (subnet: string) => ({ ranges: [[{ subnet }]], dataDir: join(topo.dir, 'ipam') });
    const variants: Variant[] = [
      {
        label: 'reference bridge+host-local',
        plugin: join(REFERENCE_DIR, 'bridge'),
        config: { ...common, name: 'ref', type: 'bridge', bridge: 'cniref', ipam: { type: 'host-local', ...ipam('10.244.1.0/24') } },
      },
      {
        label: 'weft served',
        plugin: join(bin, 'weft'),
        serverPid: server.pid!,
        config: { ...common, name: 'served', type: 'weft', bridge: 'cniserved', socket, ipam: { type: 'weft-ipam', ...ipam('10.244.2.0/24') } },
      },
      {
        label: 'weft direct',
        plugin: join(bin, 'weft'),
        config: {
          ...common,
          name: 'direct',
          type: 'weft',
          bridge: 'cnidirect',
          socket: join(topo.dir, 'nobody-listens.sock'),
          ipam: { type: 'weft-ipam', ...ipam('10.244.3.0/24') },
        },
      },
    ];
    o.progress(`timing ${variants.map((v) => v.label).join(', ')}`);
    const input: DriverInput = { variants, pods, sequential: o.sequential, concurrent: o.concurrent, cniPath: `${bin}:${REFERENCE_DIR}` };
    const res = await topo.exec('host', [process.execPath, DRIVER, JSON.stringify(input)], { timeoutMs: 600_000 });
    if (res.code !== 0) throw new Error(`bench driver failed: ${res.stderr.trim() || res.stdout.trim()}`);
    const results = JSON.parse(res.stdout) as VariantResult[];
    const ref = results[0]!;
    const rows = results.map((r) => ({
      ...r,
      addRatio: r.addP50 / ref.addP50,
      delRatio: r.delP50 / ref.delP50,
      cpuRatio: r.cpuPerAddMs / ref.cpuPerAddMs,
      concurrentRatio: r.concurrentWallMs / ref.concurrentWallMs,
    }));
    const served = rows.find((r) => r.label === 'weft served')!;
    return {
      bench: 'cni',
      sequential: o.sequential,
      concurrent: o.concurrent,
      results: rows,
      ...outcome(
        [{ what: 'weft served ADD p50 vs reference', bar: 'ratio ≤ 1 (beats the reference)', value: served.addRatio, met: served.addRatio <= 1 }],
        rows.flatMap((r) => missing({ [`${r.label} ADD p50`]: r.addP50, [`${r.label} DEL p50`]: r.delP50, [`${r.label} CPU per ADD`]: r.cpuPerAddMs })),
      ),
    };
  } finally {
    await topo.destroy();
  }
}

export function formatCniReport(r: CniBenchReport): string {
  const rows = r.results.map((x) => [
    x.label,
    x.addP50,
    x.addP95,
    x.delP50,
    x.delP95,
    x.cpuPerAddMs,
    x.concurrentWallMs,
    `${x.addRatio.toFixed(2)}x`,
    `${x.delRatio.toFixed(2)}x`,
    `${x.cpuRatio.toFixed(2)}x`,
    `${x.concurrentRatio.toFixed(2)}x`,
  ]);
  return [
    `weft bench cni: ${r.sequential} sequential pods, ${r.concurrent} concurrent (times in ms; ratios are against the reference, lower is better)`,
    table(
      ['plugin', 'ADD p50', 'ADD p95', 'DEL p50', 'DEL p95', 'CPU/ADD', `${r.concurrent} at once`, 'ADD ratio', 'DEL ratio', 'CPU ratio', 'burst ratio'],
      rows,
    ),
  ].join('\n');
}
