import { readFileSync } from 'node:fs';
import { collect } from '../util/proc.js';
import { percentile } from './report.js';

/**
 * The timed half of `weft bench cni`. It runs inside the bench's host namespace, so each plugin is
 * exec'd exactly as a runtime on that node would exec it, with no `ip netns exec` in the measurement.
 */
export interface Variant {
  label: string;
  plugin: string;
  config: object;
  /** A process whose CPU time counts too (the served path's warm server). */
  serverPid?: number;
}

export interface DriverInput {
  variants: Variant[];
  pods: string[];
  sequential: number;
  concurrent: number;
  cniPath: string;
}

export interface VariantResult {
  label: string;
  addP50: number;
  addP95: number;
  delP50: number;
  delP95: number;
  cpuPerAddMs: number;
  concurrentWallMs: number;
}

const TICK_MS = 10;

/**
 * CPU time in ms from /proc/PID/stat: of the reaped children only (the plugins this driver ran), or
 * of the process and its children (the warm server and the `ip`/`nft` it ran).
 */
function cpuMs(pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const which = pid === 'self' ? [13, 14] : [11, 12, 13, 14];
  return which.reduce((sum, i) => sum + Number(fields[i]), 0) * TICK_MS;
}

async function invoke(v: Variant, input: DriverInput, command: 'ADD' | 'DEL', pod: string): Promise<number> {
  const started = performance.now();
  const env = {
    PATH: process.env.PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: `bench-${pod}`,
    CNI_NETNS: `/run/netns/${pod}`,
    CNI_IFNAME: 'eth0',
    CNI_PATH: input.cniPath,
  };
  const r = await collect([v.plugin], { input: JSON.stringify(v.config), env });
  if (r.code !== 0) throw new Error(`${v.label} ${command} ${pod} failed: ${r.stdout.trim()} ${r.stderr.trim()}`);
  return performance.now() - started;
}

async function measure(v: Variant, input: DriverInput): Promise<VariantResult> {
  const pods = input.pods.slice(0, input.sequential);
  const adds: number[] = [];
  const dels: number[] = [];
  const cpu0 = cpuMs('self') + (v.serverPid ? cpuMs(v.serverPid) : 0);
  for (const pod of pods) adds.push(await invoke(v, input, 'ADD', pod));
  const cpu1 = cpuMs('self') + (v.serverPid ? cpuMs(v.serverPid) : 0);
  for (const pod of pods) dels.push(await invoke(v, input, 'DEL', pod));
  const burst = input.pods.slice(0, input.concurrent);
  const started = performance.now();
  await Promise.all(burst.map((pod) => invoke(v, input, 'ADD', pod)));
  const concurrentWallMs = performance.now() - started;
  await Promise.all(burst.map((pod) => invoke(v, input, 'DEL', pod)));
  return {
    label: v.label,
    addP50: percentile(adds, 50),
    addP95: percentile(adds, 95),
    delP50: percentile(dels, 50),
    delP95: percentile(dels, 95),
    cpuPerAddMs: (cpu1 - cpu0) / pods.length,
    concurrentWallMs,
  };
}

const input = JSON.parse(process.argv[2]!) as DriverInput;
const results: VariantResult[] = [];
for (const v of input.variants) {
  // One untimed round first, so the bridge exists and caches are warm for every variant alike.
  await invoke(v, input, 'ADD', input.pods[0]!);
  await invoke(v, input, 'DEL', input.pods[0]!);
  results.push(await measure(v, input));
}
process.stdout.write(JSON.stringify(results));
