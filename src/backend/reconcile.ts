import { readFileSync } from 'node:fs';
import type { Netns } from '../kernel/exec.js';
import { nftTx, type NftFamily, type NftTx } from '../kernel/nft.js';
import * as op from '../kernel/ops.js';
import { Plan } from '../kernel/plan.js';
import type { Notification } from '../kernel/watch.js';
import { RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE } from '../kernel/codec.js';
import { cachedRuleset, snapshot, type FdbEntry, type Link, type Neighbour, type NftTableState, type Route } from '../kernel/state.js';
import { contains, overlaps, parseAddr, parseCidr } from '../ip/cidr.js';
import { PROXY_TABLE } from '../proxy/rules.js';
import { FAMILY, firewallChains, FORGED_COUNTER, foreignForwardChains, forwardRules, PEER_SET, TABLE, type ForeignForward } from './firewall.js';
import type { DesiredRoute, DesiredState, TunDevice, VxlanDevice } from './types.js';

/** What the kernel holds, as far as the agent owns it. */
export interface ActualState {
  /** The device named in the desired state, if it exists. */
  device?: Link;
  /** IPv4 addresses (CIDR) on that device. */
  deviceAddrs: string[];
  /** The main table's IPv4 routes. */
  routes: Route[];
  /** Neighbours and fdb entries of the device. */
  neighbours: Neighbour[];
  fdb: FdbEntry[];
  table?: NftTableState;
  /** Forward-hook base chains of other tables (Docker's FORWARD), with the agent's rules in them. */
  foreign: ForeignForward[];
  /** net.ipv4.ip_forward; undefined when it cannot be read (another namespace). */
  forwarding?: boolean;
  /** accept_local on the udp backend's TUN device; undefined when unknown. */
  tunAcceptLocal?: boolean;
}

const RT_MAIN = 254;

// The service proxy's tables are not the agent's to read: at 30k Services dumping their rules takes seconds.
const agentRuleset = cachedRuleset((t) => t.startsWith(PROXY_TABLE));

/** The part of ActualState that comes from rtnetlink (the rest is nftables and sysctls). */
export type NetlinkPart = Pick<ActualState, 'device' | 'deviceAddrs' | 'routes' | 'neighbours' | 'fdb'>;

/**
 * Reads the parts of the kernel state `desired` concerns: one netlink snapshot (unless `netlink`
 * is given: what a read found before, known to be unchanged since) and the ruleset (read again only
 * when its generation moved). Reading changes nothing.
 */
export async function readActual(ns: Netns, desired: Pick<DesiredState, 'device'>, netlink?: NetlinkPart): Promise<ActualState> {
  const name = desired.device?.name;
  const [k, ruleset] = await Promise.all([netlink ?? readNetlink(ns, name), agentRuleset(ns)]);
  const table = ruleset.find((t) => t.family === FAMILY && t.name === TABLE);
  const actual: ActualState = {
    deviceAddrs: k.deviceAddrs,
    routes: k.routes,
    neighbours: k.neighbours,
    fdb: k.fdb,
    foreign: foreignForwardChains(ruleset),
    ...(k.device ? { device: k.device } : {}),
    ...(table ? { table } : {}),
  };
  const device = actual.device;
  if (ns === undefined) {
    try {
      actual.forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() === '1';
    } catch {
      // leave unknown
    }
    if (device && desired.device?.kind === 'tun') {
      try {
        actual.tunAcceptLocal = readFileSync(`/proc/sys/net/ipv4/conf/${device.name}/accept_local`, 'utf8').trim() === '1';
      } catch {
        // leave unknown
      }
    }
  }
  return actual;
}

async function readNetlink(ns: Netns, name: string | undefined): Promise<NetlinkPart> {
  const k = await snapshot(ns, { neighboursOf: name === undefined ? [] : [name] });
  const device = name === undefined ? undefined : k.links.find((l) => l.name === name);
  return {
    deviceAddrs: device ? k.addrs.filter((a) => a.dev === name && a.family === 4).map((a) => `${a.address}/${a.prefix}`) : [],
    routes: k.routes,
    neighbours: device ? k.neighbours.filter((n) => n.dev === name) : [],
    fdb: device ? k.fdb.filter((f) => f.dev === name) : [],
    ...(device ? { device } : {}),
  };
}

/**
 * Whether an rtnetlink notification may change what readNetlink reads, `device` being the ifindex
 * of the desired device: any link or IPv4 address, a main-table route, or a neighbour or fdb entry
 * of that device. A node's other neighbours (the underlay's ARP, a bridge learning its ports'
 * MACs) come and go all the time and are not the agent's.
 */
export const concernsNetlinkPart =
  (device: number | undefined): Notification =>
  (type, m) => {
    if (type === RTM_NEWNEIGH || type === RTM_DELNEIGH) return device !== undefined && m.readInt32LE(20) === device;
    if (type === RTM_NEWROUTE || type === RTM_DELROUTE) return m.readUInt8(20) === RT_MAIN;
    return true;
  };

export interface Reconciliation {
  plan: Plan;
  /** One human-readable line per difference, e.g. "add route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink". */
  changes: string[];
}

export type ChangeKind = 'sysctl' | 'device' | 'address' | 'fdb' | 'neighbour' | 'route' | 'firewall' | 'vxlan_peers' | 'forward_rules';

/** What a line of `Reconciliation.changes` is about (for counting repairs by kind). */
export function changeKind(change: string): ChangeKind {
  if (change.includes('ip_forward')) return 'sysctl';
  if (/^(create|recreate) device |^set /.test(change)) return 'device';
  if (/ VXLAN from /.test(change)) return 'vxlan_peers';
  if (/accept rules from |^accept the pod Network /.test(change)) return 'forward_rules';
  if (change.includes(' nftables ')) return 'firewall';
  return (/ (address|fdb|neighbour|route) /.exec(change)?.[1] as ChangeKind | undefined) ?? 'device';
}

const routeText = (r: DesiredRoute): string => `${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`;

function tunMismatch(link: Link): string | undefined {
  if (link.kind !== 'tun') return `is a ${link.kind ?? 'plain'} device, not tun`;
  if (link.tun?.type === 'tap') return 'is a tap device, not tun';
  if (link.tun?.multiQueue) return 'is multi-queue';
  return undefined;
}

/**
 * The udp backend's flannel0: a persistent TUN device (IFF_NO_PI), its /32, MTU and up. Deleting
 * or recreating it takes its routes; the agent's packet loop reattaches after.
 */
function reconcileTun(ns: Netns, dev: TunDevice, actual: ActualState, plan: Plan, changes: string[]): Route[] {
  let routesNow = actual.routes;
  let link = actual.device;
  const wrong = link && tunMismatch(link);
  if (link && wrong) {
    plan.add(op.delLink({ ns, dev: dev.name, tolerate: 'missing' }));
    changes.push(`recreate device ${dev.name}: it ${wrong}`);
    link = undefined;
  }
  // The ICMP errors the agent writes into the device come from the device's own address, which
  // the kernel drops as a martian source unless accept_local is on.
  const acceptLocal = op.setSysctl({ ns, key: `net/ipv4/conf/${dev.name}/accept_local`, value: '1' });
  if (!link) {
    routesNow = routesNow.filter((r) => r.dev !== dev.name);
    plan.add(
      op.addTun({ ns, name: dev.name, tolerate: 'exists' }),
      op.setLink({ ns, dev: dev.name, mtu: dev.mtu }),
      op.addAddr({ ns, addr: dev.address, dev: dev.name, tolerate: 'exists' }),
      op.setLink({ ns, dev: dev.name, up: true }),
      acceptLocal,
    );
    if (!wrong) changes.push(`create device ${dev.name} (tun, mtu ${dev.mtu})`);
    return routesNow;
  }
  if (actual.tunAcceptLocal === false) {
    plan.add(acceptLocal);
    changes.push(`set ${dev.name} accept_local`);
  }
  if (link.mtu !== dev.mtu) {
    plan.add(op.setLink({ ns, dev: dev.name, mtu: dev.mtu }));
    changes.push(`set ${dev.name} mtu ${dev.mtu}`);
  }
  addressAndUp(ns, dev, link, actual, plan, changes);
  return routesNow;
}

/** The device's one address (stale ones removed) and its up flag, for an existing device of either kind. */
function addressAndUp(ns: Netns, dev: { name: string; address: string }, link: Link, actual: ActualState, plan: Plan, changes: string[]): void {
  if (!actual.deviceAddrs.includes(dev.address)) {
    plan.add(op.addAddr({ ns, addr: dev.address, dev: dev.name, tolerate: 'exists' }));
    changes.push(`add address ${dev.address} to ${dev.name}`);
  }
  for (const a of actual.deviceAddrs.filter((a) => a !== dev.address)) {
    plan.add(op.delAddr({ ns, addr: a, dev: dev.name, tolerate: 'missing' }));
    changes.push(`remove stale address ${a} from ${dev.name}`);
  }
  if (!link.up) {
    plan.add(op.setLink({ ns, dev: dev.name, up: true }));
    changes.push(`set ${dev.name} up`);
  }
}

function deviceMismatch(want: VxlanDevice, link: Link): string | undefined {
  const v = link.vxlan;
  if (link.kind !== 'vxlan' || !v) return `is a ${link.kind ?? 'plain'} device, not vxlan`;
  if (v.vni !== want.vni) return `has VNI ${v.vni}, not ${want.vni}`;
  if (v.local !== want.local) return `has local ${String(v.local)}, not ${want.local}`;
  if (v.port !== want.port) return `has port ${v.port}, not ${want.port}`;
  if (v.dev !== want.dev) return `sits on ${String(v.dev)}, not ${want.dev}`;
  if (v.learning) return 'has learning on';
  return undefined;
}

/**
 * The plan that turns `actual` into `desired`: adds what is missing, changes what differs, and
 * removes stale entries the agent owns. Owned means: everything on the VXLAN device; routes in the
 * main table to subnets inside the Network other than this node's own (kernel routes excluded);
 * everything in the `weft` nftables table; rules marked as the agent's in other tables' forward
 * chains. An empty plan means the kernel is as wanted.
 */
export function reconcile(ns: Netns, desired: DesiredState, actual: ActualState): Reconciliation {
  const plan = new Plan();
  const changes: string[] = [];
  let neighboursNow = actual.neighbours;
  let fdbNow = actual.fdb;
  let routesNow = actual.routes;

  if (actual.forwarding === false) {
    plan.add(op.setSysctl({ ns, key: 'net.ipv4.ip_forward', value: '1' }));
    changes.push('enable net.ipv4.ip_forward');
  }

  // The device first: routes, neighbours and fdb entries hang off it.
  const dev = desired.device;
  if (dev?.kind === 'tun') {
    routesNow = reconcileTun(ns, dev, actual, plan, changes);
  } else if (dev) {
    let link = actual.device;
    const wrong = link && deviceMismatch(dev, link);
    if (link && wrong) {
      plan.add(op.delLink({ ns, dev: dev.name, tolerate: 'missing' }));
      changes.push(`recreate device ${dev.name}: it ${wrong}`);
      link = undefined;
    }
    if (!link) {
      // Deleting or creating the device takes everything hanging off it.
      neighboursNow = [];
      fdbNow = [];
      routesNow = routesNow.filter((r) => r.dev !== dev.name);
      plan.add(
        op.addVxlan({ ns, name: dev.name, mac: dev.mac, mtu: dev.mtu, vni: dev.vni, local: dev.local, dev: dev.dev, port: dev.port, tolerate: 'exists' }),
        op.addAddr({ ns, addr: dev.address, dev: dev.name, tolerate: 'exists' }),
        op.setLink({ ns, dev: dev.name, up: true }),
      );
      if (!wrong)
        changes.push(`create device ${dev.name} (vxlan id ${dev.vni} local ${dev.local} dev ${dev.dev} dstport ${dev.port}, mac ${dev.mac}, mtu ${dev.mtu})`);
    } else {
      if (link.mac !== dev.mac || link.mtu !== dev.mtu) {
        plan.add(op.setLink({ ns, dev: dev.name, mac: dev.mac, mtu: dev.mtu }));
        changes.push(`set ${dev.name} mac ${dev.mac} mtu ${dev.mtu}`);
      }
      addressAndUp(ns, dev, link, actual, plan, changes);
    }

    const wantFdb = new Set(desired.fdb.map((f) => `${f.mac}|${f.dst}`));
    for (const f of fdbNow) {
      if (f.dst === undefined || wantFdb.has(`${f.mac}|${f.dst}`)) continue;
      plan.add(op.delFdb({ ns, mac: f.mac, dev: dev.name, dst: f.dst, tolerate: 'missing' }));
      changes.push(`remove stale fdb ${f.mac} dst ${f.dst} dev ${dev.name}`);
    }
    const haveFdb = new Set(fdbNow.filter((f) => f.dst !== undefined).map((f) => `${f.mac}|${f.dst}`));
    for (const f of desired.fdb) {
      if (haveFdb.has(`${f.mac}|${f.dst}`)) continue;
      plan.add(op.replaceFdb({ ns, mac: f.mac, dev: f.dev, dst: f.dst }));
      changes.push(`add fdb ${f.mac} dst ${f.dst} dev ${f.dev}`);
    }

    const wantNeigh = new Map(desired.neighbours.map((n) => [n.ip, n]));
    for (const n of neighboursNow) {
      if (wantNeigh.has(n.dst) || !n.permanent) continue;
      plan.add(op.delNeigh({ ns, dst: n.dst, dev: dev.name, tolerate: 'missing' }));
      changes.push(`remove stale neighbour ${n.dst} dev ${dev.name}`);
    }
    const neighbourAt = new Map(neighboursNow.map((a) => [a.dst, a]));
    for (const n of desired.neighbours) {
      const have = neighbourAt.get(n.ip);
      if (have && have.mac === n.mac && have.permanent) continue;
      plan.add(op.setNeigh({ ns, dst: n.ip, mac: n.mac, dev: n.dev }));
      changes.push(`${have ? 'fix' : 'add'} neighbour ${n.ip} lladdr ${n.mac} dev ${n.dev}`);
    }
  }

  const owned = ownedRoute(desired.network, desired.ownSubnet);
  const want = new Map(desired.routes.map((r) => [r.dst, r]));
  for (const r of routesNow) {
    if (!owned(r) || want.has(r.dst)) continue;
    plan.add(op.delRoute({ ns, dst: r.dst, ...(r.via ? { via: r.via } : {}), ...(r.dev ? { dev: r.dev } : {}), tolerate: 'missing' }));
    changes.push(`remove stale route ${r.dst}${r.via ? ` via ${r.via}` : ''}${r.dev ? ` dev ${r.dev}` : ''}`);
  }
  const routeTo = new Map<string, Route>();
  for (const r of routesNow) if (!routeTo.has(r.dst)) routeTo.set(r.dst, r);
  for (const r of desired.routes) {
    const have = routeTo.get(r.dst);
    if (have && have.via === r.via && have.dev === r.dev && have.onlink === r.onlink) continue;
    plan.add(op.replaceRoute({ ns, dst: r.dst, ...(r.via ? { via: r.via } : {}), dev: r.dev, ...(r.onlink ? { onlink: true } : {}) }));
    changes.push(`${have ? 'fix' : 'add'} route ${routeText(r)}`);
  }

  firewall(ns, desired, actual.table, plan, changes);
  foreignForward(ns, desired, actual.foreign, plan, changes);
  return { plan, changes };
}

/**
 * What the kernel holds once `plan` has been applied to `actual` in full, when the plan is only what
 * lease events make: routes, the device's neighbours and fdb entries, and the VXLAN peer set's
 * elements. Undefined for any other plan (a device, an address, a chain): then only a read tells.
 * A lease event's reconcile diffs against this instead of reading the kernel again, as flannel
 * programs a lease's route, neighbour and fdb entry without reading the kernel; the periodic resync
 * reads it, and repairs what changed behind the agent's back.
 */
export function applied(actual: ActualState, plan: Plan): ActualState | undefined {
  let routes = actual.routes;
  let neighbours = actual.neighbours;
  let fdb = actual.fdb;
  let peers = actual.table?.sets.get(PEER_SET);
  for (const o of plan.ops) {
    switch (o.op) {
      case 'replaceRoute':
      case 'delRoute':
        routes = routes.filter((r) => r.dst !== o.dst || r.table !== RT_MAIN);
        if (o.op === 'replaceRoute') {
          if (o.type) return undefined;
          routes = [
            ...routes,
            {
              family: 4,
              dst: o.dst,
              protocol: 'boot',
              table: RT_MAIN,
              onlink: o.onlink === true,
              ...(o.via ? { via: o.via } : {}),
              ...(o.dev ? { dev: o.dev } : {}),
            },
          ];
        }
        break;
      case 'setNeigh':
      case 'delNeigh':
        neighbours = neighbours.filter((n) => n.dst !== o.dst || n.dev !== o.dev);
        if (o.op === 'setNeigh') neighbours = [...neighbours, { dst: o.dst, dev: o.dev, ...(o.mac ? { mac: o.mac } : {}), permanent: true }];
        break;
      case 'replaceFdb':
      case 'delFdb':
        fdb = fdb.filter((f) => f.mac !== o.mac || f.dev !== o.dev || (o.op === 'delFdb' && f.dst !== o.dst));
        if (o.op === 'replaceFdb') fdb = [...fdb, { mac: o.mac, dev: o.dev, dst: o.dst, self: true, permanent: true }];
        break;
      case 'nft': {
        const { tx } = o;
        if (!peers || tx.family !== FAMILY || tx.table !== TABLE) return undefined;
        for (const { verb, obj } of tx.ops) {
          if (obj.type !== 'element' || obj.set !== PEER_SET || typeof obj.key !== 'string' || (verb !== 'add' && verb !== 'delete')) return undefined;
          const key = obj.key;
          peers = verb === 'add' ? (peers.includes(key) ? peers : [...peers, key]) : peers.filter((p) => p !== key);
        }
        break;
      }
      default:
        return undefined;
    }
  }
  const out: ActualState = { ...actual, routes, neighbours, fdb };
  if (actual.table && peers && peers !== actual.table.sets.get(PEER_SET))
    out.table = { ...actual.table, sets: new Map([...actual.table.sets, [PEER_SET, peers]]) };
  return out;
}

/**
 * Whether `read` found nothing new since `known`: readActual handed back the netlink part it was
 * given and the ruleset of an unmoved nftables generation (the same objects), and the sysctls and
 * the other tables' forward chains read the same.
 */
export function sameKernel(read: ActualState, known: ActualState): boolean {
  return (
    read.device === known.device &&
    read.deviceAddrs === known.deviceAddrs &&
    read.routes === known.routes &&
    read.neighbours === known.neighbours &&
    read.fdb === known.fdb &&
    read.table === known.table &&
    read.forwarding === known.forwarding &&
    read.tunAcceptLocal === known.tunAcceptLocal &&
    JSON.stringify(read.foreign) === JSON.stringify(known.foreign)
  );
}

function firewall(ns: Netns, desired: DesiredState, table: NftTableState | undefined, plan: Plan, changes: string[]): void {
  const fw = desired.firewall;
  const chains = firewallChains(fw);
  const body = nftTx(FAMILY, TABLE);
  if (!table) changes.push(`create nftables table ${FAMILY} ${TABLE}`);
  for (const c of chains) {
    const have = table?.chains.get(c.chain.name);
    const comments = have?.rules.map((r) => r.comment ?? '') ?? [];
    if (have && comments.join('\n') === c.comments.join('\n')) continue;
    if (have) {
      body.flush({ type: 'chain', name: c.chain.name }).delete({ type: 'chain', name: c.chain.name });
      changes.push(`rewrite nftables chain ${c.chain.name}`);
    } else if (table) {
      changes.push(`add nftables chain ${c.chain.name}`);
    }
    body.add(c.chain);
    c.rules.forEach((rule, i) => body.add({ type: 'rule', chain: c.chain.name, rule, comment: c.comments[i]! }));
  }
  for (const name of table?.chains.keys() ?? []) {
    if (chains.some((c) => c.chain.name === name)) continue;
    body.flush({ type: 'chain', name }).delete({ type: 'chain', name });
    changes.push(`remove nftables chain ${name}`);
  }
  const peers = fw.vxlan?.peers ?? [];
  const havePeers = table?.sets.get(PEER_SET);
  const have = new Set(havePeers);
  const want = new Set(peers);
  const adds = peers.filter((p) => !have.has(p));
  const dels = (havePeers ?? []).filter((p) => !want.has(p));
  const needSet = fw.vxlan !== undefined && havePeers === undefined;
  const needCounter = fw.vxlan !== undefined && !table?.counters.has(FORGED_COUNTER);
  // Objects the rules and elements refer to come first ("add" is a no-op for what exists); a
  // transaction of peer changes alone is element changes only, which go over nfnetlink.
  const tx = nftTx(FAMILY, TABLE);
  if (!table || needSet || needCounter || !body.empty) {
    tx.add({ type: 'table' });
    if (fw.vxlan) tx.add({ type: 'counter', name: FORGED_COUNTER }, { type: 'set', name: PEER_SET, key: 'ipv4_addr' });
  }
  tx.ops.push(...body.ops);
  for (const p of adds) tx.add({ type: 'element', set: PEER_SET, key: p });
  for (const p of dels) tx.delete({ type: 'element', set: PEER_SET, key: p });
  if (adds.length) changes.push(`allow VXLAN from ${adds.join(', ')}`);
  if (dels.length) changes.push(`stop allowing VXLAN from ${dels.join(', ')}`);
  if (!tx.empty) plan.add(op.nft({ ns, tx }));
}

/** The agent's accept rules in other tables' forward chains that drop by policy (see forwardRules). */
function foreignForward(ns: Netns, desired: DesiredState, foreign: ForeignForward[], plan: Plan, changes: string[]): void {
  const want = forwardRules(desired.network);
  for (const f of foreign) {
    const where = `${f.family} ${f.table} ${f.chain}`;
    const needed = desired.firewall.forwardRules && f.policy === 'drop';
    const exact = needed && f.ours.map((r) => r.comment).join('\n') === want.comments.join('\n');
    if (exact || (!needed && f.ours.length === 0)) continue;
    const tx = nftTx(f.family as NftFamily, f.table);
    removeOurs(tx, f);
    if (needed) want.rules.forEach((rule, i) => tx.add({ type: 'rule', chain: f.chain, rule, comment: want.comments[i]! }));
    plan.add(op.nft({ ns, tx }));
    changes.push(needed ? `accept the pod Network in ${where} (its policy is drop)` : `remove weft's accept rules from ${where}`);
  }
}

function removeOurs(tx: NftTx, f: ForeignForward): void {
  for (const r of f.ours) tx.delete({ type: 'rule', chain: f.chain, handle: r.handle });
}

/**
 * Routes the agent owns: main-table routes to subnets inside the Network, other than this node's
 * own subnet (the CNI bridge's kernel route) and never kernel-made ones.
 */
export function ownedRoute(network: string, ownSubnet: string): (r: Route) => boolean {
  const net = parseCidr(network);
  const own = parseCidr(ownSubnet);
  return (r) => {
    if (r.protocol === 'kernel' || r.dst === 'default' || r.family !== 4) return false;
    const dst = parseCidr(r.dst);
    return dst.prefix >= net.prefix && contains(net, parseAddr(r.dst.split('/')[0]!)) && !overlaps(dst, own);
  };
}

/** The devices `weft agent --cleanup` removes: flannel.<VNI> VXLAN devices and the udp backend's flannel0 TUN. */
export const isAgentDevice = (l: Link): boolean => (/^flannel\.\d+$/.test(l.name) && l.kind === 'vxlan') || (l.name === 'flannel0' && l.kind === 'tun');

/**
 * The plan that removes everything the agent programs (`weft agent --cleanup`): its routes, its
 * devices (with their neighbours and fdb entries), its nftables table, and its accept rules in
 * other tables' forward chains (which stay otherwise untouched).
 */
export function teardown(ns: Netns, network: string, ownSubnet: string, actual: { links: Link[]; routes: Route[]; ruleset: NftTableState[] }): Reconciliation {
  const plan = new Plan();
  const changes: string[] = [];
  const owned = ownedRoute(network, ownSubnet);
  const devices = actual.links.filter(isAgentDevice).map((l) => l.name);
  for (const r of actual.routes) {
    if (!owned(r) || (r.dev !== undefined && devices.includes(r.dev))) continue;
    plan.add(op.delRoute({ ns, dst: r.dst, ...(r.via ? { via: r.via } : {}), tolerate: 'missing' }));
    changes.push(`remove route ${r.dst}${r.via ? ` via ${r.via}` : ''}`);
  }
  for (const d of devices) {
    plan.add(op.delLink({ ns, dev: d, tolerate: 'missing' }));
    changes.push(`remove device ${d} (with its routes, neighbours and fdb entries)`);
  }
  if (actual.ruleset.some((t) => t.family === FAMILY && t.name === TABLE)) {
    plan.add(op.nft({ ns, tx: nftTx(FAMILY, TABLE).delete({ type: 'table' }), tolerate: 'missing' }));
    changes.push(`remove nftables table ${FAMILY} ${TABLE}`);
  }
  for (const f of foreignForwardChains(actual.ruleset)) {
    if (f.ours.length === 0) continue;
    const tx = nftTx(f.family as NftFamily, f.table);
    removeOurs(tx, f);
    plan.add(op.nft({ ns, tx, tolerate: 'missing' }));
    changes.push(`remove weft's accept rules from ${f.family} ${f.table} ${f.chain}`);
  }
  return { plan, changes };
}
