import type { ConntrackFilter, UdpEntry } from '../kernel/conntrack.js';
import type { Fragment, UdpTarget } from './rules.js';

/**
 * Stale UDP conntrack entries. A UDP "connection" to a Service keeps the endpoint its first packet
 * was DNATed to for as long as packets keep coming, so when that endpoint goes away the client
 * talks to nothing (kube-proxy's long-standing bug). Entries are deleted:
 * - for each endpoint a UDP service port no longer leads to: flows to the ClusterIP:port (and the
 *   NodePort) whose reply comes from that endpoint;
 * - for a service port that had no endpoints and now has some, or is new: the flows to the
 *   ClusterIP:port (and NodePort) that were never DNATed, whose reply comes from the port itself.
 *   Only those: the delete runs after the new rules are in, and a flow they already sent to an
 *   endpoint must keep it;
 * - for a service port that is gone: every flow to the ClusterIP:port (and NodePort);
 * - on a full resync, any flow to a service port whose reply source is not one of its endpoints
 *   (what an agent that was down, or a failed delete, left behind).
 */
export type Flow = ConntrackFilter;

const tid = (t: UdpTarget): string => `${t.clusterIP}:${t.port}`;

/** Flows to `t` that were never DNATed: their reply comes from the ClusterIP:port (or NodePort) itself. */
function undnatedFlows(t: UdpTarget): Flow[] {
  const out: Flow[] = [
    ['-p', 'udp', '--orig-dst', t.clusterIP, '--orig-port-dst', String(t.port), '--reply-src', t.clusterIP, '--reply-port-src', String(t.port)],
  ];
  if (t.nodePort !== undefined) out.push(['-p', 'udp', '--orig-port-dst', String(t.nodePort), '--reply-port-src', String(t.nodePort)]);
  return out;
}

/** Flows to `t` whose reply comes from the endpoint `reply`, or all of them. */
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
      out.push(...undnatedFlows(n));
      continue;
    }
    for (const e of t.endpoints) if (!n.endpoints.includes(e)) out.push(...flowsOf(t, e));
  }
  for (const [id, n] of after) if (!before.has(id) && n.endpoints.length > 0) out.push(...undnatedFlows(n));
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
