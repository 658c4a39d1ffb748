import { parseArgs } from 'node:util';
import { benchCni, formatCniReport, writeReport } from '../bench/cni.js';
import { benchLab, formatLabReport } from '../bench/lab.js';
import { benchConverge, formatConvergeReport } from '../bench/converge.js';
import { benchDatapath, formatDatapathReport } from '../bench/datapath.js';
import type { Backend } from '../lab/lab.js';
import { UsageError } from './usage.js';

const count = (v: string | undefined, name: string, dflt: number): number => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 500) throw new UsageError(`--${name} takes a whole number from 1 to 500`);
  return n;
};

export async function benchCommand(argv: string[]): Promise<number> {
  const [which, ...rest] = argv;
  switch (which) {
    case 'cni': {
      const { values } = parseArgs({ args: rest, options: { pods: { type: 'string' }, concurrent: { type: 'string' }, quick: { type: 'boolean' }, json: { type: 'string' } } });
      const report = await benchCni({
        sequential: count(values.pods, 'pods', values.quick ? 5 : 100),
        concurrent: count(values.concurrent, 'concurrent', values.quick ? 4 : 32),
      });
      console.log(formatCniReport(report));
      console.log(JSON.stringify(report));
      writeReport(values.json, report);
      return 0;
    }
    case 'lab': {
      const { values } = parseArgs({ args: rest, options: { quick: { type: 'boolean' }, json: { type: 'string' } } });
      const report = await benchLab(values.quick ? [[2, 1]] : [[3, 2], [20, 10]]);
      console.log(formatLabReport(report));
      console.log(JSON.stringify(report));
      writeReport(values.json, report);
      return 0;
    }
    case 'datapath': {
      const { values } = parseArgs({ args: rest, options: { quick: { type: 'boolean' }, seconds: { type: 'string' }, rounds: { type: 'string' }, backends: { type: 'string', default: 'vxlan,host-gw,udp' }, json: { type: 'string' } } });
      const backends = values.backends.split(',') as Backend[];
      if (backends.some((b) => !['vxlan', 'host-gw', 'udp'].includes(b))) throw new UsageError('--backends is a comma list of vxlan, host-gw, udp');
      const report = await benchDatapath(backends, count(values.seconds, 'seconds', values.quick ? 1 : 5), count(values.rounds, 'rounds', values.quick ? 1 : 3));
      console.log(formatDatapathReport(report));
      console.log(JSON.stringify(report));
      writeReport(values.json, report);
      return 0;
    }
    case 'converge': {
      const { values } = parseArgs({ args: rest, options: { quick: { type: 'boolean' }, nodes: { type: 'string' }, rounds: { type: 'string' }, json: { type: 'string' } } });
      const report = await benchConverge(count(values.nodes, 'nodes', values.quick ? 3 : 10), count(values.rounds, 'rounds', values.quick ? 3 : 20));
      console.log(formatConvergeReport(report));
      console.log(JSON.stringify(report));
      writeReport(values.json, report);
      return 0;
    }
    default:
      throw new UsageError(`unknown bench "${which ?? ''}" (available: cni, datapath, converge, lab)`);
  }
}
