import { spawn } from 'node:child_process';
import { down, execIn, readState, up, type Backend } from '../lab/lab.js';
import { Topology } from '../topo/topology.js';
import { table } from '../cli/format.js';
import { missing, outcome, percentile, type Outcome } from './report.js';

/**
 * Cross-node pod-to-pod TCP throughput (iperf3) and RTT for each backend, against the raw underlay
 * between the same two node namespaces, measured in the same lab.
 */
export interface DatapathRow {
  backend: Backend;
  rawGbps: number;
  podGbps: number;
  ratio: number;
  rawRttMs: number;
  podRttMs: number;
}

/** Each backend's bar and goal (issues 3 and 5): ratios to raw, except udp's absolute bar. */
export const BARS: Record<Backend, { bar: string; goal: string; met: (x: DatapathRow) => boolean }> = {
  vxlan: { bar: '0.75 of raw', goal: '0.85 of raw', met: (x) => x.ratio >= 0.75 },
  'host-gw': { bar: '0.90 of raw', goal: '0.97 of raw', met: (x) => x.ratio >= 0.9 },
  udp: { bar: '1 Gbit/s', goal: '0.25 of raw', met: (x) => x.podGbps >= 1 },
};

/**
 * One iperf3 run to a server bound to `ip`, reached at `target` (a Service's ClusterIP in front of it,
 * or `ip` itself). The server is one-shot (-1), so each attempt starts its own; an attempt fails when
 * the server is not listening yet or iperf3 reports an error instead of a result.
 */
export async function iperf(serverNs: string, clientNs: string, ip: string, seconds: number, target = ip): Promise<number> {
  let last: unknown;
  for (let attempt = 0; attempt < 10; attempt++) {
    const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', ip], { stdio: 'ignore' });
    try {
      await new Promise((res) => setTimeout(res, 150));
      const { stdout } = await execIn(clientNs, ['iperf3', '-J', '-c', target, '-t', String(seconds), '--connect-timeout', '2000']);
      const r = JSON.parse(stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
      if (r.end?.sum_received) return r.end.sum_received.bits_per_second / 1e9;
      last = new Error(`iperf3 gave no result: ${r.error ?? 'unknown error'}`);
    } catch (e) {
      last = e;
    } finally {
      server.kill();
    }
  }
  throw last;
}

async function rtt(ns: string, ip: string, count: number): Promise<number> {
  const { stdout } = await execIn(ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.01', ip]);
  return Number(/= [\d.]+\/([\d.]+)\//.exec(stdout)?.[1] ?? NaN);
}

/**
 * Raw and pod runs alternate `rounds` times and each side takes its median, so a burst of load on
 * this 2-core machine moves one sample rather than the ratio.
 */
export interface DatapathReport extends Outcome {
  bench: 'datapath';
  seconds: number;
  rounds: number;
  rows: DatapathRow[];
}

export async function benchDatapath(backends: Backend[], seconds: number, rounds: number, progress: (step: string) => void): Promise<DatapathReport> {
  const topo = await Topology.create();
  const rows: DatapathRow[] = [];
  try {
    for (const backend of backends) {
      progress(`${backend}: a 2-node lab`);
      await up({ name: topo.id, nodes: 2, podsPerNode: 1, backend, progress: () => undefined });
      try {
        const s = readState(topo.id);
        const [n1, n2] = s.nodes;
        const [p1, p2] = [s.pods.find((p) => p.node === n1!.name)!, s.pods.find((p) => p.node === n2!.name)!];
        const raw: number[] = [];
        const pod: number[] = [];
        for (let i = 0; i < rounds; i++) {
          progress(`${backend}: round ${i + 1} of ${rounds}, raw then pod (${seconds} s each)`);
          raw.push(await iperf(n2!.ns, n1!.ns, n2!.ip, seconds));
          pod.push(await iperf(p2.ns, p1.ns, p2.ip, seconds));
        }
        const [rawGbps, podGbps] = [percentile(raw, 50), percentile(pod, 50)];
        rows.push({ backend, rawGbps, podGbps, ratio: podGbps / rawGbps, rawRttMs: await rtt(n1!.ns, n2!.ip, 50), podRttMs: await rtt(p1.ns, p2.ip, 50) });
      } finally {
        await down(topo.id);
      }
    }
    const bars = rows.map((x) => ({
      what: `${x.backend} pod throughput`,
      bar: BARS[x.backend].bar,
      goal: BARS[x.backend].goal,
      value: x.backend === 'udp' ? x.podGbps : x.ratio,
      met: BARS[x.backend].met(x),
    }));
    const problems = rows.flatMap((x) =>
      missing({
        [`${x.backend} raw Gbit/s`]: x.rawGbps,
        [`${x.backend} pod Gbit/s`]: x.podGbps,
        [`${x.backend} raw RTT`]: x.rawRttMs,
        [`${x.backend} pod RTT`]: x.podRttMs,
      }),
    );
    return { bench: 'datapath', seconds, rounds, rows, ...outcome(bars, problems) };
  } finally {
    await topo.destroy();
  }
}

export function formatDatapathReport(r: DatapathReport): string {
  const vx = r.rows.find((x) => x.backend === 'vxlan');
  return [
    `weft bench datapath: iperf3 TCP, median of ${r.rounds} alternating ${r.seconds} s runs, node1 pod → node2 pod vs node1 → node2 on the raw underlay (same run)`,
    table(
      ['backend', 'raw Gbit/s', 'pod Gbit/s', 'pod/raw', ...(vx ? ['pod/vxlan'] : []), 'bar', 'met', 'goal', 'raw RTT ms', 'pod RTT ms'],
      r.rows.map((x) => {
        const b = BARS[x.backend];
        return [
          x.backend,
          x.rawGbps,
          x.podGbps,
          x.ratio.toFixed(2),
          ...(vx ? [(x.podGbps / vx.podGbps).toFixed(2)] : []),
          b.bar,
          b.met(x) ? 'yes' : 'NO',
          b.goal,
          x.rawRttMs,
          x.podRttMs,
        ];
      }),
    ),
  ].join('\n');
}
