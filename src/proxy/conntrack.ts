import type { CtEntry, FlowFilter } from '../kernel/conntrack.js';
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
const tid = (t: UdpTarget): string => `${t.clusterIP}:${t.port}`;

/** Flows to `t` that were never DNATed: their reply comes from the ClusterIP:port (or NodePort) itself. */
function undnatedFlows(t: UdpTarget): FlowFilter[] {
  const out: FlowFilter[] = [{ origDst: t.clusterIP, origDport: t.port, replySrc: t.clusterIP, replySport: t.port }];
  if (t.nodePort !== undefined) out.push({ origDport: t.nodePort, replySport: t.nodePort });
  return out;
}

/** Flows to `t` whose reply comes from the endpoint `reply` ("ip:port"), or all of them (to the NodePort: all DNATed ones). */
function flowsOf(t: UdpTarget, reply?: string): FlowFilter[] {
  const from = reply ? { replySrc: reply.slice(0, reply.lastIndexOf(':')), replySport: Number(reply.slice(reply.lastIndexOf(':') + 1)) } : undefined;
  const out: FlowFilter[] = [{ origDst: t.clusterIP, origDport: t.port, ...from }];
  if (t.nodePort !== undefined) out.push({ origDport: t.nodePort, ...(from ?? { dstNat: true }) });
  return out;
}

/** The flows that a change of one Service's rules makes stale. */
export function staleFlows(old: Fragment | undefined, now: Fragment | undefined): FlowFilter[] {
  const before = new Map((old?.udp ?? []).map((t) => [tid(t), t]));
  const after = new Map((now?.udp ?? []).map((t) => [tid(t), t]));
  const out: FlowFilter[] = [];
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
 * The full check: the UDP entries to a ClusterIP:port or NodePort of `targets` whose reply does not
 * come from one of that port's endpoints.
 */
export function strayFlows(entries: CtEntry[], targets: Iterable<UdpTarget>): CtEntry[] {
  const byIp = new Map<string, UdpTarget>();
  const byNodePort = new Map<number, UdpTarget>();
  for (const t of targets) {
    byIp.set(tid(t), t);
    if (t.nodePort !== undefined) byNodePort.set(t.nodePort, t);
  }
  return entries.filter((e) => {
    const t =
      byIp.get(`${e.orig.dst}:${e.orig.dport}`) ?? (e.reply.src !== e.orig.dst && e.orig.dport !== undefined ? byNodePort.get(e.orig.dport) : undefined);
    return t !== undefined && !t.endpoints.includes(`${e.reply.src}:${e.reply.sport}`);
  });
}
