import type { Netns } from '../kernel/exec.js';
import { collect } from '../util/proc.js';
import type { Fragment, UdpTarget } from './rules.js';

/**
 * Stale UDP conntrack entries. A UDP "connection" to a Service keeps the endpoint its first packet
 * was DNATed to for as long as packets keep coming, so when that endpoint goes away the client
 * talks to nothing (kube-proxy's long-standing bug). Entries are deleted:
 * - for each endpoint a UDP service port no longer leads to: flows to the ClusterIP:port (and the
 *   NodePort) whose reply comes from that endpoint;
 * - for a service port that had no endpoints and now has some, or that is gone: every flow to the
 *   ClusterIP:port (and NodePort), which were never DNATed or point at endpoints now unknown;
 * - on a full resync, any flow to a service port whose reply source is not one of its endpoints
 *   (what an agent that was down, or a failed delete, left behind).
 */
export type Flow = string[];

const tid = (t: UdpTarget): string => `${t.clusterIP}:${t.port}`;

function flowsOf(t: UdpTarget, reply?: string): Flow[] {
  const [ip, port] = reply ? [reply.slice(0, reply.lastIndexOf(':')), reply.slice(reply.lastIndexOf(':') + 1)] : [];
  const replyArgs = ip ? ['--reply-src', ip, '--reply-port-src', port!] : [];
  const out: Flow[] = [['-p', 'udp', '--orig-dst', t.clusterIP, '--orig-port-dst', String(t.port), ...replyArgs]];
  if (t.nodePort !== undefined) out.push(['-p', 'udp', '--orig-port-dst', String(t.nodePort), ...(ip ? replyArgs : ['--dst-nat'])]);
  return out;
}

/** The conntrack filters (`conntrack -D` arguments) that a change of one Service's rules makes stale. */
export function staleFlows(old: Fragment | undefined, now: Fragment | undefined): Flow[] {
  const before = new Map((old?.udp ?? []).map((t) => [tid(t), t]));
  const after = new Map((now?.udp ?? []).map((t) => [tid(t), t]));
  const out: Flow[] = [];
  for (const [id, t] of before) {
    const n = after.get(id);
    if (!n || t.nodePort !== n.nodePort) {
      out.push(...flowsOf(t));
      continue;
    }
    if (t.endpoints.length === 0 && n.endpoints.length > 0) {
      out.push(...flowsOf(n));
      continue;
    }
    for (const e of t.endpoints) if (!n.endpoints.includes(e)) out.push(...flowsOf(t, e));
  }
  for (const [id, n] of after) if (!before.has(id) && n.endpoints.length > 0) out.push(...flowsOf(n));
  return out;
}

const argv = (ns: Netns, args: string[]): string[] => (ns === undefined ? ['conntrack', ...args] : ['nsenter', `--net=${ns}`, 'conntrack', ...args]);

/** Deletes the flows; returns how many entries went. conntrack exits 1 when nothing matched, which is fine. */
export async function clearFlows(ns: Netns, flows: Flow[]): Promise<number> {
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

/**
 * The full check: every UDP flow to a ClusterIP:port or NodePort of `targets` whose reply does not
 * come from one of that port's endpoints, as exact 5-tuple filters.
 */
export function strayFlows(entries: UdpEntry[], targets: Iterable<UdpTarget>): Flow[] {
  const byIp = new Map<string, UdpTarget>();
  const byNodePort = new Map<number, UdpTarget>();
  for (const t of targets) {
    byIp.set(tid(t), t);
    if (t.nodePort !== undefined) byNodePort.set(t.nodePort, t);
  }
  const out: Flow[] = [];
  for (const e of entries) {
    const t = byIp.get(`${e.origDst}:${e.dport}`) ?? (e.replySrc !== e.origDst ? byNodePort.get(e.dport) : undefined);
    if (!t || t.endpoints.includes(`${e.replySrc}:${e.replySport}`)) continue;
    out.push(['-p', 'udp', '--orig-src', e.origSrc, '--orig-dst', e.origDst, '--sport', String(e.sport), '--dport', String(e.dport)]);
  }
  return out;
}

export async function listUdp(ns: Netns): Promise<UdpEntry[]> {
  const r = await collect(argv(ns, ['-L', '-p', 'udp']), { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`conntrack -L: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
  return parseConntrack(r.stdout);
}
