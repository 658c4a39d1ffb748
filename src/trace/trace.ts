import { fileURLToPath } from 'node:url';
import { netnsPath } from '../kernel/netns.js';
import { nft } from '../kernel/ops.js';
import { nftTx, type NftFamily } from '../kernel/nft.js';
import { apply, Plan } from '../kernel/plan.js';
import { links, routes, type Link } from '../kernel/state.js';
import type { CtEntry } from '../kernel/conntrack.js';
import { listFlows, routeGet, TraceMonitor } from '../kernel/trace.js';
import { contains, parseAddr, parseCidr } from '../ip/cidr.js';
import { POD_NETWORK } from '../lab/build.js';
import { labView } from '../lab/services.js';
import { LabError, type LabState } from '../lab/state.js';
import { APP_PORT } from '../lab/workload.js';
import { collect } from '../util/proc.js';
import { parseTrace, vxlanVni, type TracedPacket, type TraceRecord } from './events.js';
import type { TraceEndpoint, TraceHop, TraceOptions, TraceProto, TraceResult } from './types.js';

/**
 * `weft trace`: one real probe from SRC, watched by the kernel. In each lab namespace on the path a
 * table `weft-trace-<id>` (removed afterwards, whatever happens) sets `meta nftrace` on the probe at
 * priority -350, before any other chain, because the kernel clears the flag whenever a packet changes
 * namespace or is encapsulated; node namespaces also mark the outer VXLAN / udp-backend datagram by
 * its inner source port, read raw from the payload. `nft monitor` in each namespace reports every
 * base chain the probe passes and every rule that decided something; `ip route get` gives each
 * routing decision and conntrack the endpoint a Service's DNAT chose. The IPv4 id, which forwarding
 * and NAT keep, tells the probe's first packet from retransmissions and other traffic.
 */
const PROBE = fileURLToPath(new URL('./probe-main.js', import.meta.url));
const TUNNEL: Record<string, { dev: string; port: number; innerL4: number } | undefined> = {
  vxlan: { dev: 'flannel.1', port: 8472, innerL4: 8 + 8 + 14 + 20 },
  udp: { dev: 'flannel0', port: 8285, innerL4: 8 + 20 },
};

type At = TraceHop['at'];
/** A namespace the probe may cross, with how hops there are labelled. */
interface Place {
  ns: string;
  where: string;
  at: At;
  bridge: boolean;
  node: boolean;
  /** The namespace's own address, where a probe may arrive with a rewritten source. */
  arrives?: string;
}

interface Resolved extends TraceEndpoint {
  service?: { ports: { port: number; protocol: string }[]; endpointIps: string[] };
}

async function resolve(s: LabState, spec: string, role: 'SRC' | 'DST'): Promise<Resolved> {
  const pod = s.pods.find((p) => p.name === spec || p.ip === spec);
  if (pod) return { kind: 'pod', spec, name: pod.name, ip: pod.ip, ns: pod.ns, node: pod.node };
  const node = s.nodes.find((n) => n.name === spec || n.ip === spec);
  if (node) return { kind: 'node', spec, name: node.name, ip: node.ip, ns: node.ns, node: node.name };
  if (spec === 'outside' || spec === s.outside.ip) return { kind: 'outside', spec, name: 'outside', ip: s.outside.ip, ns: s.outside.ns };
  const isIp = /^\d+\.\d+\.\d+\.\d+$/.test(spec);
  if (s.backend !== 'macvlan') {
    const view = await labView(s);
    const [ns, name] = spec.includes('/') ? spec.split('/', 2) : [undefined, spec];
    const svc = view.services.find((x) => (isIp ? x.clusterIP === spec : x.name === name && (ns === undefined || x.namespace === ns)));
    if (svc?.clusterIP) {
      return {
        kind: 'service',
        spec,
        name: `${svc.namespace}/${svc.name}`,
        ip: svc.clusterIP,
        service: { ports: svc.ports.map((p) => ({ port: p.port, protocol: p.protocol })), endpointIps: svc.endpoints.map((e) => e.ip) },
      };
    }
  }
  if (isIp && role === 'DST') return { kind: 'ip', spec, ip: spec };
  const names = [...s.pods.map((p) => p.name), ...s.nodes.map((n) => n.name), 'outside'].join(', ');
  throw new LabError(
    'trace-target',
    `${role} "${spec}" is not a pod, node, Service or outside of lab ${s.name}${role === 'SRC' ? ' (a probe leaves from a lab namespace)' : ''}; it has ${names}`,
  );
}

const inPods = (ip: string) => contains(parseCidr(POD_NETWORK), parseAddr(ip));

function placeOf(s: LabState, ip: string): Place | undefined {
  const pod = s.pods.find((p) => p.ip === ip);
  if (pod) return { ns: pod.ns, where: pod.name, at: { kind: 'pod', name: pod.name }, bridge: false, node: false, arrives: pod.ip };
  const node = s.nodes.find((n) => n.ip === ip);
  if (node) return nodePlace(s, node.name);
  if (ip === s.outside.ip) return { ns: s.outside.ns, where: 'outside', at: { kind: 'outside', name: 'outside' }, bridge: false, node: false, arrives: ip };
  return undefined;
}

function nodePlace(s: LabState, name: string): Place {
  const n = s.nodes.find((x) => x.name === name)!;
  return { ns: n.ns, where: n.name, at: { kind: 'node', name: n.name }, bridge: s.backend !== 'macvlan', node: true, arrives: n.ip };
}

/** A NodePort on a node: the Service behind it and its endpoints, so that the path goes on to them. */
async function nodePort(s: LabState, port: number, proto: TraceProto): Promise<Resolved['service']> {
  const view = await labView(s);
  const svc = view.services.find((x) => x.ports.some((p) => p.nodePort === port && p.protocol.toLowerCase() === proto));
  return svc && { ports: svc.ports.map((p) => ({ port: p.port, protocol: p.protocol })), endpointIps: svc.endpoints.map((e) => e.ip) };
}

/** The namespaces the probe can cross, in path order: SRC, its node, (the switch), DST's node, DST. */
function places(s: LabState, src: Resolved, dst: Resolved): Place[] {
  const out: Place[] = [];
  const macvlan = s.backend === 'macvlan';
  const add = (p: Place | undefined) => p && !out.some((x) => x.ns === p.ns) && out.push(p);
  const side = (ip: string, node: string | undefined) => {
    if (node && !macvlan) add(nodePlace(s, node));
    add(placeOf(s, ip));
  };
  add(placeOf(s, src.ip));
  if (src.kind === 'pod' && !macvlan) add(nodePlace(s, src.node!));
  if (macvlan || src.kind === 'outside') add({ ns: s.underlay.ns, where: 'underlay', at: { kind: 'underlay', name: 'underlay' }, bridge: true, node: false });
  // A NodePort: the node DNATs, then the endpoint's node and pod.
  if (dst.kind === 'node') add(nodePlace(s, dst.node!));
  const dstIps = dst.service ? dst.service.endpointIps : [dst.ip];
  for (const ip of dstIps) side(ip, s.pods.find((p) => p.ip === ip)?.node);
  if (dst.kind === 'ip' && !inPods(dst.ip)) add(placeOf(s, s.outside.ip));
  if (dst.kind === 'ip' && inPods(dst.ip)) {
    const holder = s.nodes.find((n) => n.subnet && contains(parseCidr(n.subnet.replace(/\.\d+\//, '.0/')), parseAddr(dst.ip)));
    if (holder) add(nodePlace(s, holder.name));
  }
  return out;
}

/** The trace table's rules for a namespace: the probe itself, and in node namespaces its outer datagram. */
function traceTx(family: NftFamily, table: string, match: string[]) {
  const hooks = family === 'bridge' ? (['prerouting', 'forward', 'output'] as const) : (['prerouting', 'output'] as const);
  const tx = nftTx(family, table).add({ type: 'table' });
  for (const hook of hooks) {
    tx.add({ type: 'chain', name: hook, hook, priority: -350 });
    for (const m of match) tx.add({ type: 'rule', chain: hook, rule: `${m} meta nftrace set 1` });
  }
  return tx;
}

function matches(proto: TraceProto, id: number, place: Place, endpoints: string[]): string[] {
  const own = proto === 'icmp' ? `icmp type echo-request icmp id ${id}` : `meta l4proto ${proto} th sport ${id}`;
  // A masquerade (to the outside, a NodePort, a Service's hairpin) changes the source port on the way
  // to these addresses; the IPv4 id, checked afterwards, still names the probe among what this catches.
  const to = [...(place.arrives ? [place.arrives] : []), ...(place.node ? endpoints : [])];
  if (!to.length) return [own];
  const first = proto === 'icmp' ? 'icmp type echo-request' : proto === 'tcp' ? 'tcp flags & (syn | ack) == syn' : 'meta l4proto udp';
  return [own, `ip daddr { ${to.join(', ')} } ${first}`];
}

/** The outer VXLAN / udp-backend datagram, matched by what it carries: the probe's port or id, or an endpoint as inner destination. */
function outerMatches(backend: string, proto: TraceProto, id: number, endpoints: string[]): string[] {
  const t = TUNNEL[backend];
  if (!t) return [];
  const bits = (t.innerL4 + (proto === 'icmp' ? 4 : 0)) * 8;
  const innerDst = (t.innerL4 - 4) * 8;
  const hex = (ip: string) =>
    `0x${ip
      .split('.')
      .map((b) => Number(b).toString(16).padStart(2, '0'))
      .join('')}`;
  return [`udp dport ${t.port} @th,${bits},16 ${id}`, ...endpoints.map((ip) => `udp dport ${t.port} @th,${innerDst},32 ${hex(ip)}`)];
}

interface ProbeOutcome {
  ok: boolean;
  refused?: boolean;
  error?: string;
  answer?: string;
  ms: number;
}

async function sendProbe(src: Resolved, dstIp: string, proto: TraceProto, port: number | undefined, id: number, timeoutMs: number): Promise<ProbeOutcome> {
  const ns = src.ns!;
  if (proto === 'icmp') {
    const r = await collect(['ip', 'netns', 'exec', ns, 'ping', '-n', '-c', '1', '-W', String(Math.ceil(timeoutMs / 1000)), '-e', String(id), dstIp], {
      timeoutMs: timeoutMs + 2000,
    });
    const ms = Number(/time=([\d.]+) ms/.exec(r.stdout)?.[1] ?? 0);
    if (r.code === 0) return { ok: true, ms };
    const text = `${r.stdout}\n${r.stderr}`;
    const why = /unreachable|Unreachable/.test(text)
      ? text
          .split('\n')
          .find((l) => /nreachable/.test(l))!
          .trim()
      : `no echo reply within ${timeoutMs} ms`;
    return { ok: false, error: why, ms };
  }
  const r = await collect(
    [
      'ip',
      'netns',
      'exec',
      ns,
      process.execPath,
      PROBE,
      '--proto',
      proto,
      '--host',
      dstIp,
      '--port',
      String(port),
      '--sport',
      String(id),
      '--timeout',
      String(timeoutMs),
    ],
    { timeoutMs: timeoutMs + 5000 },
  );
  try {
    return JSON.parse(r.stdout) as ProbeOutcome;
  } catch {
    return { ok: false, error: `the probe failed: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.code ?? r.signal}`}`, ms: 0 };
  }
}

const podOfAlias = (l: Link | undefined) => (l?.alias?.startsWith('weft:') ? l.alias.split(':')[2] : undefined);

/** What a device in `place` is, for a person: the host end of which pod, which node's switch port. */
function devLabel(s: LabState, place: Place, devs: Link[], dev: string | undefined): string {
  if (!dev) return '?';
  const l = devs.find((x) => x.name === dev);
  const pod = podOfAlias(l);
  if (pod) return `${dev} (host end of ${pod}'s eth0)`;
  if (place.at.kind === 'underlay') {
    const node = s.nodes.find((n) => n.port === dev);
    if (node) return `${dev} (${node.name}'s port)`;
    return `${dev} (${dev}'s port)`;
  }
  return dev;
}

const tuple = (p: TracedPacket) =>
  p.proto === 'icmp'
    ? `${p.saddr} → ${p.daddr} icmp ${p.icmpType ?? ''}${p.icmpId !== undefined ? ` id ${p.icmpId}` : ''}`
    : `${p.saddr}:${p.sport} → ${p.daddr}:${p.dport} ${p.proto ?? ''}${p.tcpFlags ? ` ${p.tcpFlags}` : ''}`;

const hopPacket = (p: TracedPacket, proto: TraceProto): NonNullable<TraceHop['packet']> => ({
  src: p.saddr ?? '?',
  dst: p.daddr ?? '?',
  proto,
  ...(p.sport !== undefined && { sport: p.sport }),
  ...(p.dport !== undefined && { dport: p.dport }),
});

const INTERESTING = /(?:^|\s)(dnat|snat|masquerade|redirect|reject|notrack)(?=\s|$)/;

export async function traceLab(s: LabState, srcSpec: string, dstSpec: string, o: TraceOptions = {}): Promise<TraceResult> {
  const started = performance.now();
  if (s.building) throw new LabError('half-built', `lab ${s.name} is still being built (or its lab up was interrupted)`);
  const src = await resolve(s, srcSpec, 'SRC');
  const dst = await resolve(s, dstSpec, 'DST');
  const svcPort = dst.service?.ports.find(
    (p) => (o.port === undefined || p.port === o.port) && (o.proto === undefined || p.protocol.toLowerCase() === o.proto),
  );
  const proto: TraceProto = o.proto ?? (svcPort ? (svcPort.protocol.toLowerCase() as TraceProto) : 'tcp');
  const port = proto === 'icmp' ? undefined : (o.port ?? svcPort?.port ?? APP_PORT);
  const id = 20000 + Math.floor(Math.random() * 40000);
  const table = `weft-trace-${id}`;
  if (dst.kind === 'node' && s.backend !== 'macvlan' && port !== undefined) dst.service = await nodePort(s, port, proto);
  const path = places(s, src, dst);
  const endpoints = dst.service?.endpointIps ?? [];
  const outer = outerMatches(s.backend, proto, id, dst.kind === 'node' ? endpoints : []);

  const monitors = new Map<string, TraceMonitor>();
  const made: { ns: string; family: NftFamily }[] = [];
  const lines = new Map<string, string[]>();
  let probe: ProbeOutcome;
  let flows: CtEntry[] = [];
  let leftover: string[];
  try {
    for (const p of path) monitors.set(p.ns, new TraceMonitor(netnsPath(p.ns)));
    // One transaction per namespace, all at once (each `nft -f` in a node namespace reads its whole ruleset
    // first), and all of them finished before any failure is thrown, so that the removal comes after them.
    const added = await Promise.allSettled(
      path.map((p) => {
        const plan = new Plan().add(nft({ ns: netnsPath(p.ns), tx: traceTx('ip', table, [...matches(proto, id, p, endpoints), ...(p.node ? outer : [])]) }));
        made.push({ ns: p.ns, family: 'ip' });
        if (p.bridge) {
          plan.add(nft({ ns: netnsPath(p.ns), tx: traceTx('bridge', table, matches(proto, id, p, endpoints)) }));
          made.push({ ns: p.ns, family: 'bridge' });
        }
        return apply(plan);
      }),
    );
    for (const a of added) if (a.status === 'rejected') throw a.reason;
    await subscribed(path, monitors, table, o.signal);
    o.signal?.throwIfAborted();
    probe = await sendProbe(src, dst.ip, proto, port, id, o.timeoutMs ?? 2000);
    o.signal?.throwIfAborted();
    await drained(path, monitors, table);
    const natAt = path.find((p) => p.node) ?? path[0]!;
    if (proto !== 'icmp') flows = await listFlows(netnsPath(natAt.ns), proto, id).catch(() => []);
  } finally {
    for (const [ns, m] of monitors) lines.set(ns, await m.stop());
    leftover = await removeTables(made, table);
  }
  if (leftover.length) throw new Error(`could not remove the trace table ${table}: ${leftover.join('; ')}`);
  const flow = flows.find((f) => f.orig.dst === dst.ip);
  const endpointIp = flow && flow.reply.src !== dst.ip ? flow.reply.src : undefined;
  const endpointPod = endpointIp ? s.pods.find((p) => p.ip === endpointIp) : undefined;
  // A Service's path goes on to the endpoint conntrack names, not to the others.
  const keep = dst.service && endpointIp ? places(s, src, { ...dst, service: { ...dst.service, endpointIps: [endpointIp] } }) : path;

  const hops: TraceHop[] = [];
  let droppedBy: string | undefined;
  const records = new Map(keep.map((p) => [p.ns, parseTrace(lines.get(p.ns) ?? [])]));
  const first = (records.get(keep[0]!.ns) ?? []).find((r) => r.table === table && r.family === 'ip');
  const probeId = first?.packet.ipId;
  const tunnel = TUNNEL[s.backend];
  let outerId: number | undefined;
  const isOuter = (p: TracedPacket) => tunnel !== undefined && p.proto === 'udp' && p.dport === tunnel.port;

  // A probe that comes back to where it started (a Service whose chosen endpoint is SRC itself) visits
  // SRC's namespace twice: the first visit ends where the packet arrives there again.
  const last = keep.find((p) => p.ns === (endpointPod?.ns ?? dst.ns)) ?? keep[keep.length - 1]!;
  const visits = last === keep[0] && keep.length > 1 ? [...keep, last] : keep;
  const cursor = new Map<string, number>();
  for (const [vi, place] of visits.entries()) {
    if (droppedBy) break;
    const mine = (records.get(place.ns) ?? []).filter((r) => {
      if (isOuter(r.packet)) {
        outerId ??= r.packet.ipId;
        return r.packet.ipId === outerId;
      }
      return probeId !== undefined && r.packet.ipId === probeId;
    });
    const from = cursor.get(place.ns) ?? 0;
    const again = visits.indexOf(place, vi + 1) > 0;
    const back = again ? mine.findIndex((r, i) => i > from && r.table === table && r.chain === 'prerouting') : -1;
    const recs = mine.slice(from, back > 0 ? back : undefined);
    cursor.set(place.ns, from + recs.length);
    const devs = recs.length ? await links(netnsPath(place.ns)).catch(() => []) : [];
    const hop = (h: Omit<TraceHop, 'where' | 'at'>) => hops.push({ where: place.where, at: place.at, ...h });
    const isSrc = vi === 0;
    if (isSrc) {
      const r = await routeGet(netnsPath(place.ns), dst.ip);
      if (!r.ok) {
        droppedBy = `no route to ${dst.ip} in ${place.where} (ip route get: ${r.error})`;
        hop({ kind: 'route', summary: `no route to ${dst.ip}: ${r.error}`, verdict: { action: 'drop' }, observed: true, source: 'ip route get' });
        break;
      }
      hop({ kind: 'route', dev: r.dev, summary: await routeText(place, dst.ip, r), observed: true, source: 'ip route get' });
    }
    if (recs.length && place.node && hops.some((h) => h.at.kind === 'node' && h.at.name !== place.where) && s.backend !== 'macvlan') {
      hop({
        kind: 'underlay',
        summary: `across the underlay switch (br0 in ${s.underlay.ns}) to ${place.where}`,
        observed: false,
        source: 'inferred: the switch is not traced; it forwards by MAC address',
      });
    }
    let routedFrom: string | undefined;
    for (const r of recs) {
      if (droppedBy) break;
      const p = r.packet;
      if (r.table === table) {
        // The switch only bridges; its IP hooks see the same frames again (br_netfilter) and say nothing new.
        if (place.at.kind === 'underlay' && r.family === 'ip') continue;
        if (s.backend === 'macvlan' && r.family === 'bridge' && r.chain === 'prerouting') macvlanHop(p.iif, 'out');
        traceHop(r, place, devs, hop, p);
        if (s.backend === 'macvlan' && r.family === 'bridge' && r.chain === 'forward') macvlanHop(p.oif, 'in');
        if (r.family === 'ip' && r.chain === 'prerouting' && !isOuter(p)) routedFrom = p.iif;
        continue;
      }
      for (const rule of r.rules) {
        const stmt = INTERESTING.exec(rule.text)?.[1];
        const verdict = rule.verdict.split(' ')[0]!;
        if (!stmt && !['accept', 'drop', 'queue'].includes(verdict)) continue;
        const action = verdict === 'drop' ? 'drop' : (stmt ?? verdict);
        hop({
          kind: 'nft',
          summary: `${r.family} ${r.table} ${rule.chain}: ${action}: ${rule.text}${rule.handle !== undefined ? ` (handle ${rule.handle})` : ''}`,
          verdict: { action, table: `${r.family} ${r.table}`, chain: rule.chain, rule: rule.text, ...(rule.handle !== undefined && { handle: rule.handle }) },
          packet: hopPacket(p, proto),
          observed: true,
          source: 'nft monitor trace',
        });
        if (verdict === 'drop')
          droppedBy = `${r.family} ${r.table} ${rule.chain} rule "${rule.text}"${rule.handle !== undefined ? ` (handle ${rule.handle})` : ''} in ${place.where}`;
        if (stmt === 'dnat' && flow && endpointIp) {
          hop({
            kind: 'conntrack',
            summary: `conntrack: ${flow.orig.dst}:${flow.orig.dport} → endpoint ${endpointIp}:${flow.reply.sport}${endpointPod ? ` (${endpointPod.name})` : ''}`,
            verdict: { action: 'dnat' },
            packet: { src: flow.orig.src, dst: endpointIp, proto, sport: id, ...(flow.reply.sport !== undefined && { dport: flow.reply.sport }) },
            observed: true,
            source: 'conntrack table (ctnetlink)',
          });
        }
      }
      if (!droppedBy && r.policy === 'drop') {
        hop({
          kind: 'nft',
          summary: `${r.family} ${r.table} ${r.chain}: policy drop`,
          verdict: { action: 'drop', table: `${r.family} ${r.table}`, chain: r.chain, policy: true },
          observed: true,
          source: 'nft monitor trace',
        });
        droppedBy = `${r.family} ${r.table} ${r.chain} policy drop in ${place.where}`;
      }
      if (
        !droppedBy &&
        routedFrom &&
        place.node &&
        p.oif !== undefined &&
        r === recs.find((x) => x.packet.oif !== undefined && x.table !== table && !isOuter(x.packet))
      ) {
        const lookup = await routeGet(netnsPath(place.ns), p.daddr!, { from: p.saddr!, iif: routedFrom });
        hop({
          kind: 'route',
          dev: lookup.dev ?? p.oif,
          summary: lookup.ok ? await routeText(place, p.daddr!, lookup) : `no route: ${lookup.error}`,
          observed: true,
          source: 'ip route get',
        });
      }
    }
    const at = hops.map((h) => h.kind === 'deliver' && h.where === place.where).lastIndexOf(true);
    const arrival = hops[at];
    if (!droppedBy && vi === visits.length - 1 && arrival) {
      // Delivery ends the trace: after the input hook's verdicts, when the probe was answered.
      hops.push(...hops.splice(at, 1));
      arrival.summary = `${deliverText(place, probe, proto, arrival.packet?.dport ?? port)}; arrived on ${arrival.dev}${arrival.packet ? ` as ${arrival.packet.src}${arrival.packet.sport !== undefined ? `:${arrival.packet.sport}` : ''} → ${arrival.packet.dst}${arrival.packet.dport !== undefined ? `:${arrival.packet.dport}` : ''}` : ''}`;
      arrival.verdict = { action: probe.ok ? 'deliver' : 'no-answer' };
    }
  }
  const outcome: TraceResult['outcome'] = droppedBy ? 'dropped' : probe.ok ? 'delivered' : 'no-answer';
  if (droppedBy) {
    const last = hops[hops.length - 1];
    if (last) last.verdict = { ...(last.verdict ?? { action: 'drop' }), action: 'drop' };
  }
  return {
    lab: s.name,
    backend: s.backend,
    src: strip(src),
    dst: strip(dst),
    proto,
    ...(port !== undefined && { port }),
    ...(endpointIp && {
      endpoint: { ip: endpointIp, ...(flow?.reply.sport !== undefined && { port: flow.reply.sport }), ...(endpointPod && { pod: endpointPod.name }) },
    }),
    hops,
    outcome,
    ...(droppedBy && { droppedBy }),
    ...(outcome === 'no-answer' && { droppedBy: `nothing dropped it in a traced namespace: ${probe.error ?? 'no answer'}` }),
    ms: Math.round(performance.now() - started),
  };

  /** Macvlan pods send and receive through their node's eth0 without its IP stack: nothing to trace there. */
  function macvlanHop(port: string | undefined, way: 'out' | 'in'): void {
    const node = s.nodes.find((n) => n.port === port);
    if (!node) return;
    const text =
      way === 'out'
        ? `the frame left through ${node.name}'s eth0: the pod's eth0 is a macvlan child of it, so ${node.name}'s IP stack and nftables never see it`
        : `${node.name}'s eth0 hands the frame to the macvlan child whose MAC it is addressed to`;
    hops.push({
      where: node.name,
      at: { kind: 'node', name: node.name },
      kind: 'veth',
      dev: 'eth0',
      summary: text,
      observed: false,
      source: 'inferred: macvlan bypasses the node',
    });
  }

  function traceHop(r: TraceRecord, place: Place, devs: Link[], hop: (h: Omit<TraceHop, 'where' | 'at'>) => void, p: TracedPacket): void {
    if (r.family === 'bridge') {
      const master = devs.find((l) => l.name === (p.iif ?? p.oif))?.master ?? 'the bridge';
      if (r.chain === 'prerouting')
        hop({
          kind: 'veth',
          dev: p.iif,
          summary: `enters bridge ${master} on ${devLabel(s, place, devs, p.iif)}`,
          observed: true,
          source: 'nft monitor trace (bridge prerouting)',
        });
      else if (r.chain === 'forward')
        hop({
          kind: 'bridge',
          dev: master,
          summary: `bridge ${master} forwards the frame ${p.iif} → ${devLabel(s, place, devs, p.oif)}${p.iif === p.oif ? ', back out the port it came in (hairpin)' : ''}`,
          observed: true,
          source: 'nft monitor trace (bridge forward)',
        });
      else
        hop({
          kind: 'bridge',
          dev: master,
          summary: `bridge ${master} sends it out ${devLabel(s, place, devs, p.oif)}`,
          observed: true,
          source: 'nft monitor trace (bridge output)',
        });
      return;
    }
    if (isOuter(p)) {
      const vni = s.backend === 'vxlan' ? vxlanVni(p.udpPayload) : undefined;
      const what = s.backend === 'vxlan' ? `VXLAN, VNI ${vni ?? '?'}` : 'udp backend datagram';
      const outerPkt = {
        ...hopPacket(first?.packet ?? p, proto),
        outer: { src: p.saddr ?? '?', dst: p.daddr ?? '?', proto: 'udp' as const, dport: p.dport ?? 0, ...(vni !== undefined && { vni }) },
      };
      if (r.chain === 'output') {
        const by = s.backend === 'vxlan' ? `${tunnel!.dev} wraps it` : `the agent read it from ${tunnel!.dev} (TUN) and sends it`;
        hop({
          kind: 'encap',
          dev: p.oif,
          summary: `${by}: ${what}, outer ${p.saddr}:${p.sport} → ${p.daddr}:${p.dport} out ${p.oif}`,
          packet: outerPkt,
          observed: true,
          source: 'nft monitor trace (output, outer packet matched by its payload)',
        });
      } else {
        hop({
          kind: 'underlay',
          dev: p.iif,
          summary: `arrives on ${p.iif} from ${p.saddr}: ${what} to udp ${p.dport}`,
          packet: outerPkt,
          observed: true,
          source: 'nft monitor trace (prerouting)',
        });
      }
      return;
    }
    if (r.chain === 'output') {
      hop({
        kind: place.at.kind === 'pod' ? 'pod-eth0' : 'route',
        dev: p.oif,
        summary: `leaves ${p.oif}: ${tuple(p)}`,
        packet: hopPacket(p, proto),
        observed: true,
        source: 'nft monitor trace (output)',
      });
      return;
    }
    if (tunnel && p.iif === tunnel.dev) {
      const how = s.backend === 'vxlan' ? `${p.iif} decapsulates it` : `the agent writes it into ${p.iif} (TUN)`;
      hop({
        kind: 'decap',
        dev: p.iif,
        summary: `${how}: inner ${tuple(p)}`,
        packet: hopPacket(p, proto),
        observed: true,
        source: 'nft monitor trace (prerouting)',
      });
    } else if (place.node && p.iif === 'eth0' && !(dst.kind === 'node' && !dst.service && place.where === dst.name)) {
      hop({
        kind: 'underlay',
        dev: 'eth0',
        summary: `arrives on eth0, not encapsulated: ${tuple(p)}`,
        packet: hopPacket(p, proto),
        observed: true,
        source: 'nft monitor trace (prerouting)',
      });
    } else if (place.node && !(dst.kind === 'node' && !dst.service && place.where === dst.name)) {
      const routed = s.cniMode === 'routed';
      hop({
        kind: routed ? 'veth' : 'bridge',
        dev: p.iif,
        summary: routed
          ? `${p.iif} (the pod's host veth, no bridge) hands it to ${place.where}'s IP stack (addressed to the veth's MAC, the pod's gateway 169.254.1.1)`
          : `${p.iif} hands it to ${place.where}'s IP stack (addressed to the bridge's MAC: routed, not bridged)`,
        observed: true,
        source: 'nft monitor trace (ip prerouting)',
      });
    } else {
      hop({
        kind: 'deliver',
        dev: p.iif,
        summary: `arrives on ${p.iif} of ${place.where}: ${tuple(p)}`,
        packet: hopPacket(p, proto),
        observed: true,
        source: 'nft monitor trace (prerouting)',
      });
    }
  }
}

/** Removes the trace tables, every namespace at once; returns what could not be removed. */
async function removeTables(made: { ns: string; family: NftFamily }[], table: string): Promise<string[]> {
  const byNs = [...new Set(made.map((t) => t.ns))];
  const undone = await Promise.allSettled(
    byNs.map((ns) =>
      apply(
        new Plan().add(
          ...made.filter((t) => t.ns === ns).map((t) => nft({ ns: netnsPath(ns), tx: nftTx(t.family, table).delete({ type: 'table' }), tolerate: 'missing' })),
        ),
      ),
    ),
  );
  return undone.flatMap((u, i) => (u.status === 'rejected' ? [`${byNs[i]}: ${(u.reason as Error).message}`] : []));
}

/**
 * Waits until every monitor is subscribed: a monitor that started after the table was added missed
 * its event, so an empty marker chain is added (and shows in the monitor) until each one printed one.
 */
async function subscribed(path: Place[], monitors: Map<string, TraceMonitor>, table: string, signal: AbortSignal | undefined): Promise<void> {
  let waiting = path.filter((p) => !monitors.get(p.ns)!.has(`add table ip ${table}`));
  for (let i = 0; waiting.length; i++) {
    signal?.throwIfAborted();
    if (i === 50) throw new Error(`nft monitor did not start in ${waiting.map((p) => p.ns).join(', ')}`);
    const plan = new Plan();
    for (const p of waiting) plan.add(nft({ ns: netnsPath(p.ns), tx: nftTx('ip', table).add({ type: 'chain', name: `ready${i}` }) }));
    await apply(plan);
    await new Promise((r) => setTimeout(r, 100));
    waiting = waiting.filter((p) => !monitors.get(p.ns)!.has(`add chain ip ${table} ready`));
  }
}

/**
 * Waits until every monitor has read all the kernel reported: a change of the trace table made now is
 * queued on the monitor's socket behind every earlier trace event, so once it shows, they have shown.
 * Under load that can take seconds; after 10 s the trace goes on with what arrived.
 */
async function drained(path: Place[], monitors: Map<string, TraceMonitor>, table: string): Promise<void> {
  await Promise.all(path.map((p) => apply(new Plan().add(nft({ ns: netnsPath(p.ns), tx: nftTx('ip', table).add({ type: 'chain', name: 'done' }) })))));
  const until = performance.now() + 10_000;
  while (performance.now() < until && path.some((p) => !monitors.get(p.ns)!.has(`add chain ip ${table} done`))) await new Promise((r) => setTimeout(r, 50));
}

/** The route that matched (the longest prefix holding `dst` in the main table) and the kernel's lookup. */
async function routeText(place: Place, dst: string, r: { dev?: string; gateway?: string; type?: string }): Promise<string> {
  if (r.type === 'local') return `route: ${dst} is local here`;
  const table = await routes(netnsPath(place.ns), { family: 4, table: 254 }).catch(() => []);
  const a = parseAddr(dst);
  const best = table
    .filter((x) => (x.dst === 'default' ? true : contains(parseCidr(x.dst), a)))
    .sort((x, y) => (y.dst === 'default' ? 0 : parseCidr(y.dst).prefix) - (x.dst === 'default' ? 0 : parseCidr(x.dst).prefix))[0];
  const via = r.gateway ? ` via ${r.gateway}` : '';
  const onlink = best?.onlink ? ' onlink' : '';
  return `route ${best?.dst ?? '?'}${via} dev ${r.dev}${onlink}`;
}

function deliverText(place: Place, probe: ProbeOutcome, proto: TraceProto, port: number | undefined): string {
  const who = place.where;
  if (!probe.ok) return `reached ${who}, but no answer came back: ${probe.error}`;
  if (probe.refused) return `reached ${who}: nothing listens on ${proto} ${port}, the kernel answered with ${proto === 'tcp' ? 'a reset' : 'port unreachable'}`;
  if (proto === 'icmp') return `reached ${who}: echo reply in ${probe.ms} ms`;
  return `reached ${who}: ${proto === 'tcp' ? 'connection accepted' : 'the app answered'} on port ${port} (${probe.ms} ms)`;
}

const strip = ({ service: _service, ...e }: Resolved): TraceEndpoint => e;

export { formatTrace } from './format.js';
