import { parseArgs } from 'node:util';
import { benchCni, formatCniReport, writeReport } from '../bench/cni.js';
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
    default:
      throw new UsageError(`unknown bench "${which ?? ''}" (available: cni)`);
  }
}
