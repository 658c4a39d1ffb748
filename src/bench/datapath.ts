import { spawn } from 'node:child_process';
import { down, execIn, readState, up, type Backend } from '../lab/lab.js';
import type { CniMode } from '../lab/state.js';
import { Topology } from '../topo/topology.js';
import { buildReference } from './reference.js';
import { table } from '../cli/format.js';
import { missing, outcome, percentile, type Outcome } from './report.js';

/** How the CNI plugin wires a pod: `bridge` (veth into cni0, flannel's) or `routed` (no bridge, a /32 route per pod). */
export type { CniMode };

/**
 * Cross-node pod-to-pod TCP throughput (iperf3) and RTT for each backend, against the raw underlay
 * between the same two node namespaces and, for vxlan and host-gw, against the flannel-style path
 * built by hand with no firewall rule (reference.ts), all in the same run.
 */
export interface DatapathRow {
  backend: Backend;
  mode: CniMode;
  rawGbps: number;
  /** The hand-built flannel-style path; absent for udp, which has no kernel reference. */
  refGbps?: number;
  podGbps: number;
  /** Weft / raw. */
  ratio: number;
  /** Weft / reference. */
  vsRef?: number;
  rawRttMs: number;
  refRttMs?: number;
  podRttMs: number;
}

/**
 * Each backend's bar and goal (issue 12 §3): vxlan and host-gw against the reference (Weft's
 * firewall, masquerade and Service rules should cost nothing measurable on pod-to-pod traffic);
 * udp, which has no kernel reference, its absolute bar.
 */
export const BARS: Record<Backend, { bar: string; goal: string; met: (x: DatapathRow) => boolean }> = {
  vxlan: { bar: '0.95 of reference', goal: '1.0 of reference', met: (x) => (x.vsRef ?? 0) >= 0.95 },
  'host-gw': { bar: '0.95 of reference', goal: '1.0 of reference', met: (x) => (x.vsRef ?? 0) >= 0.95 },
  udp: { bar: '1 Gbit/s', goal: '0.6 of vxlan', met: (x) => x.podGbps >= 1 },
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
 * Raw, reference and Weft runs alternate `rounds` times and each takes its median, so a burst of
 * load on this 2-core machine moves one sample rather than the ratio.
 */
export interface DatapathReport extends Outcome {
  bench: 'datapath';
  seconds: number;
  rounds: number;
  rows: DatapathRow[];
}

export interface DatapathOptions {
  backends: Backend[];
  /** CNI modes to measure for each backend (default bridge); each gets a 2-node lab of its own. */
  modes?: CniMode[];
  seconds: number;
  rounds: number;
  progress: (step: string) => void;
}

/** A path measured in rounds: its two ends, and its samples. */
interface Path {
  what: string;
  client: { ns: string; ip: string };
  server: { ns: string; ip: string };
  gbps: number[];
  rttMs: number[];
}

const path = (what: string, client: { ns: string; ip: string }, server: { ns: string; ip: string }): Path => ({ what, client, server, gbps: [], rttMs: [] });

/** A 2-node lab of one pod per node, wired by the CNI in `mode`. */
async function labUp(name: string, backend: Backend, mode: CniMode) {
  await up({ name, nodes: 2, podsPerNode: 1, backend, cniMode: mode, progress: () => undefined });
  const s = readState(name);
  const [n1, n2] = [s.nodes[0]!, s.nodes[1]!];
  const pod = (n: string) => s.pods.find((p) => p.node === n)!;
  return { nodes: [n1, n2] as const, pods: [pod(n1.name), pod(n2.name)] as const };
}

export async function benchDatapath(o: DatapathOptions): Promise<DatapathReport> {
  const { backends, seconds, rounds, progress } = o;
  const modes = o.modes?.length ? o.modes : (['bridge'] as CniMode[]);
  const topo = await Topology.create();
  const rows: DatapathRow[] = [];
  try {
    for (const backend of backends) {
      const labs = modes.map((mode, i) => ({ mode, name: i === 0 ? topo.id : `${topo.id}-${mode[0]!}` }));
      try {
        const weft: { mode: CniMode; p: Path }[] = [];
        let raw: Path | undefined;
        let mtu = 1500;
        for (const l of labs) {
          progress(`${backend}: a 2-node lab${modes.length > 1 ? ` (${l.mode})` : ''}`);
          const { nodes, pods } = await labUp(l.name, backend, l.mode);
          raw ??= path('raw', nodes[0], nodes[1]);
          mtu = pods[0].mtu ?? mtu;
          weft.push({ mode: l.mode, p: path(`Weft${modes.length > 1 ? ` ${l.mode}` : ''}`, pods[0], pods[1]) });
        }
        let ref: Path | undefined;
        if (backend !== 'udp') {
          progress(`${backend}: the reference, flannel's path built by hand (MTU ${mtu})`);
          const r = await buildReference(topo, backend, mtu);
          ref = path('reference', r.pods[0], r.pods[1]);
        }
        const paths = [raw!, ...(ref ? [ref] : []), ...weft.map((w) => w.p)];
        for (let i = 0; i < rounds; i++) {
          progress(`${backend}: round ${i + 1} of ${rounds}, ${paths.map((p) => p.what).join(', ')} (${seconds} s each)`);
          for (const p of paths) {
            p.gbps.push(await iperf(p.server.ns, p.client.ns, p.server.ip, seconds));
            p.rttMs.push(await rtt(p.client.ns, p.server.ip, 20));
          }
        }
        const med = (xs: number[]) => percentile(xs, 50);
        for (const w of weft) {
          const [rawGbps, podGbps] = [med(raw!.gbps), med(w.p.gbps)];
          rows.push({
            backend,
            mode: w.mode,
            rawGbps,
            ...(ref ? { refGbps: med(ref.gbps) } : {}),
            podGbps,
            ratio: podGbps / rawGbps,
            ...(ref ? { vsRef: podGbps / med(ref.gbps) } : {}),
            rawRttMs: med(raw!.rttMs),
            ...(ref ? { refRttMs: med(ref.rttMs) } : {}),
            podRttMs: med(w.p.rttMs),
          });
        }
      } finally {
        for (const l of labs) await down(l.name);
      }
    }
    const bars = rows.map((x) => ({
      what: `${x.backend}${x.mode === 'bridge' ? '' : ` ${x.mode}`} pod throughput`,
      bar: BARS[x.backend].bar,
      goal: BARS[x.backend].goal,
      value: x.backend === 'udp' ? x.podGbps : (x.vsRef ?? NaN),
      met: BARS[x.backend].met(x),
    }));
    const problems = rows.flatMap((x) => {
      const k = `${x.backend}${x.mode === 'bridge' ? '' : ` ${x.mode}`}`;
      return missing({
        [`${k} raw Gbit/s`]: x.rawGbps,
        [`${k} pod Gbit/s`]: x.podGbps,
        [`${k} raw RTT`]: x.rawRttMs,
        [`${k} pod RTT`]: x.podRttMs,
        ...(x.backend === 'udp' ? {} : { [`${k} reference Gbit/s`]: x.refGbps ?? NaN, [`${k} reference RTT`]: x.refRttMs ?? NaN }),
      });
    });
    return { bench: 'datapath', seconds, rounds, rows, ...outcome(bars, problems) };
  } finally {
    await topo.destroy();
  }
}

const fixed = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(2));

export function formatDatapathReport(r: DatapathReport): string {
  const vx = r.rows.find((x) => x.backend === 'vxlan' && x.mode === 'bridge');
  return [
    `weft bench datapath: iperf3 TCP, median of ${r.rounds} alternating ${r.seconds} s runs, node1 pod → node2 pod; raw: node1 → node2 on the underlay; ref: flannel's path built by hand, no firewall rules (same run)`,
    table(
      [
        'backend',
        'mode',
        'raw Gbit/s',
        'ref Gbit/s',
        'Weft Gbit/s',
        'Weft/ref',
        'Weft/raw',
        ...(vx ? ['Weft/vxlan'] : []),
        'bar',
        'met',
        'goal',
        'raw RTT ms',
        'ref RTT ms',
        'Weft RTT ms',
      ],
      r.rows.map((x) => {
        const b = BARS[x.backend];
        return [
          x.backend,
          x.mode,
          x.rawGbps,
          x.refGbps ?? '-',
          x.podGbps,
          fixed(x.vsRef),
          x.ratio.toFixed(2),
          ...(vx ? [(x.podGbps / vx.podGbps).toFixed(2)] : []),
          b.bar,
          b.met(x) ? 'yes' : 'NO',
          b.goal,
          x.rawRttMs,
          x.refRttMs ?? '-',
          x.podRttMs,
        ];
      }),
    ),
  ].join('\n');
}
