import type { Netns } from './exec.js';
import { collect } from '../util/proc.js';

/**
 * Conntrack entries through the `conntrack` tool (conntrack-tools), run in the namespace: listing
 * UDP flows and deleting flows by filter. A filter is `conntrack -D` arguments
 * (`['-p', 'udp', '--orig-dst', IP, ...]`).
 */
export type ConntrackFilter = string[];

const argv = (ns: Netns, args: string[]): string[] => (ns === undefined ? ['conntrack', ...args] : ['nsenter', `--net=${ns}`, 'conntrack', ...args]);

/** Deletes the flows; returns how many entries went. conntrack exits 1 when nothing matched, which is fine. */
export async function clearFlows(ns: Netns, flows: ConntrackFilter[]): Promise<number> {
  let deleted = 0;
  for (const f of flows) {
    const r = await collect(argv(ns, ['-D', ...f]), { timeoutMs: 10_000 });
    const m = /(\d+) flow entries have been deleted/.exec(r.stderr);
    if (!m) throw new Error(`conntrack -D ${f.join(' ')}: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
    deleted += Number(m[1]);
  }
  return deleted;
}

/** One UDP conntrack entry: original destination and the reply's source. */
export interface UdpEntry {
  origSrc: string;
  origDst: string;
  sport: number;
  dport: number;
  replySrc: string;
  replySport: number;
}

export function parseConntrack(text: string): UdpEntry[] {
  const out: UdpEntry[] = [];
  for (const line of text.split('\n')) {
    const src = [...line.matchAll(/\bsrc=(\S+)/g)].map((m) => m[1]!);
    const dst = [...line.matchAll(/\bdst=(\S+)/g)].map((m) => m[1]!);
    const sport = [...line.matchAll(/\bsport=(\d+)/g)].map((m) => Number(m[1]));
    const dport = [...line.matchAll(/\bdport=(\d+)/g)].map((m) => Number(m[1]));
    if (src.length < 2 || dst.length < 1 || sport.length < 2 || dport.length < 1) continue;
    out.push({ origSrc: src[0]!, origDst: dst[0]!, sport: sport[0]!, dport: dport[0]!, replySrc: src[1]!, replySport: sport[1]! });
  }
  return out;
}

export async function listUdp(ns: Netns): Promise<UdpEntry[]> {
  const r = await collect(argv(ns, ['-L', '-p', 'udp']), { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`conntrack -L: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
  return parseConntrack(r.stdout);
}
