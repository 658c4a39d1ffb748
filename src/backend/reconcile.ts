import { readFileSync } from 'node:fs';
import type { Netns } from '../kernel/exec.js';
import { Plan } from '../kernel/plan.js';
import { addrs, fdb, links, neighbours, nftTable, routes, type FdbEntry, type Link, type Neighbour, type NftTable, type Route } from '../kernel/state.js';
import { contains, overlaps, parseAddr, parseCidr } from '../ip/cidr.js';
import { FAMILY, firewallChains, FORGED_COUNTER, PEER_SET, TABLE } from './firewall.js';
import type { DesiredRoute, DesiredState, TunDevice, VxlanDevice } from './types.js';

/** What the kernel holds, as far as the agent owns it. */
export interface ActualState {
  /** The VXLAN device named in the desired state, if it exists. */
  device?: Link;
  /** IPv4 addresses (CIDR) on that device. */
  deviceAddrs: string[];
  /** The main table's IPv4 routes. */
  routes: Route[];
  neighbours: Neighbour[];
  fdb: FdbEntry[];
  table?: NftTable;
  /** net.ipv4.ip_forward; undefined when it cannot be read (another namespace). */
  forwarding?: boolean;
  /** accept_local on the udp backend's TUN device; undefined when unknown. */
  tunAcceptLocal?: boolean;
}

/** Reads the parts of the kernel state `desired` concerns. */
export async function readActual(ns: Netns, desired: Pick<DesiredState, 'device'>): Promise<ActualState> {
  const name = desired.device?.name;
  const [linkList, routeList, table] = await Promise.all([links(ns), routes(ns), nftTable(ns, FAMILY, TABLE)]);
  const device = name === undefined ? undefined : linkList.find((l) => l.ifname === name);
  const actual: ActualState = { deviceAddrs: [], routes: routeList, neighbours: [], fdb: [], ...(device ? { device } : {}), ...(table ? { table } : {}) };
  if (device && name && desired.device?.kind === 'tun') {
    // A TUN device has no neighbours or fdb.
    actual.deviceAddrs = (await addrs(ns, name)).flatMap((l) => l.addr_info.filter((i) => i.family === 'inet').map((i) => `${i.local}/${i.prefixlen}`));
  } else if (device && name) {
    const [a, n, f] = await Promise.all([addrs(ns, name), neighbours(ns, name), fdb(ns, name)]);
    actual.deviceAddrs = a.flatMap((l) => l.addr_info.filter((i) => i.family === 'inet').map((i) => `${i.local}/${i.prefixlen}`));
    actual.neighbours = n;
    actual.fdb = f;
  }
  if (ns === undefined) {
    try {
      actual.forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() === '1';
    } catch {
      // leave unknown
    }
    if (device && desired.device?.kind === 'tun') {
      try {
        actual.tunAcceptLocal = readFileSync(`/proc/sys/net/ipv4/conf/${device.ifname}/accept_local`, 'utf8').trim() === '1';
      } catch {
        // leave unknown
      }
    }
  }
  return actual;
}

export interface Reconciliation {
  plan: Plan;
  /** One human-readable line per difference, e.g. "add route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink". */
  changes: string[];
}

const routeText = (r: DesiredRoute): string => `${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`;

function tunMismatch(link: Link): string | undefined {
  const info = link.linkinfo;
  if (info?.info_kind !== 'tun') return `is a ${info?.info_kind ?? 'plain'} device, not tun`;
  const d = info.info_data ?? {};
  if (d.type !== undefined && d.type !== 'tun') return `is a ${String(d.type)} device, not tun`;
  if (d.multi_queue === true) return 'is multi-queue';
  return undefined;
}

/**
 * The udp backend's flannel0: a persistent TUN device (iproute2 makes it IFF_NO_PI), its /32, MTU
 * and up. Deleting or recreating it takes its routes; the agent's packet loop reattaches after.
 */
function reconcileTun(ns: Netns, dev: TunDevice, actual: ActualState, plan: Plan, changes: string[]): Route[] {
  let routesNow = actual.routes;
  let link = actual.device;
  const wrong = link && tunMismatch(link);
  if (link && wrong) {
    plan.ip(ns, ['link', 'del', dev.name], 'missing');
    changes.push(`recreate device ${dev.name}: it ${wrong}`);
    link = undefined;
  }
  if (!link) {
    routesNow = routesNow.filter((r) => r.dev !== dev.name);
    plan.ip(ns, ['tuntap', 'add', 'dev', dev.name, 'mode', 'tun'], 'exists');
    plan.ip(ns, ['link', 'set', dev.name, 'mtu', String(dev.mtu)]);
    plan.ip(ns, ['addr', 'add', dev.address, 'dev', dev.name], 'exists');
    plan.ip(ns, ['link', 'set', dev.name, 'up']);
    plan.sysctl(ns, `net/ipv4/conf/${dev.name}/accept_local`, '1');
    if (!wrong) changes.push(`create device ${dev.name} (tun, mtu ${dev.mtu})`);
    return routesNow;
  }
  // The ICMP errors the agent writes into the device come from the device's own address, which
  // the kernel drops as a martian source unless accept_local is on.
  if (actual.tunAcceptLocal === false) {
    plan.sysctl(ns, `net/ipv4/conf/${dev.name}/accept_local`, '1');
    changes.push(`set ${dev.name} accept_local`);
  }
  if (link.mtu !== dev.mtu) {
    plan.ip(ns, ['link', 'set', dev.name, 'mtu', String(dev.mtu)]);
    changes.push(`set ${dev.name} mtu ${dev.mtu}`);
  }
  addressAndUp(ns, dev, link, actual, plan, changes);
  return routesNow;
}

/** The device's one address (stale ones removed) and its up flag, for an existing device of either kind. */
function addressAndUp(ns: Netns, dev: { name: string; address: string }, link: Link, actual: ActualState, plan: Plan, changes: string[]): void {
  if (!actual.deviceAddrs.includes(dev.address)) {
    plan.ip(ns, ['addr', 'add', dev.address, 'dev', dev.name], 'exists');
    changes.push(`add address ${dev.address} to ${dev.name}`);
  }
  for (const a of actual.deviceAddrs.filter((a) => a !== dev.address)) {
    plan.ip(ns, ['addr', 'del', a, 'dev', dev.name], 'missing');
    changes.push(`remove stale address ${a} from ${dev.name}`);
  }
  if (!link.flags.includes('UP')) {
    plan.ip(ns, ['link', 'set', dev.name, 'up']);
    changes.push(`set ${dev.name} up`);
  }
}

function deviceMismatch(want: VxlanDevice, link: Link): string | undefined {
  const info = link.linkinfo;
  if (info?.info_kind !== 'vxlan') return `is a ${info?.info_kind ?? 'plain'} device, not vxlan`;
  const d = info.info_data ?? {};
  if (d.id !== want.vni) return `has VNI ${String(d.id)}, not ${want.vni}`;
  if (d.local !== want.local) return `has local ${String(d.local)}, not ${want.local}`;
  if (d.port !== want.port) return `has port ${String(d.port)}, not ${want.port}`;
  if (d.link !== want.dev) return `sits on ${String(d.link)}, not ${want.dev}`;
  if (d.learning !== false) return 'has learning on';
  return undefined;
}

/**
 * The plan that turns `actual` into `desired`: adds what is missing, changes what differs, and
 * removes stale entries the agent owns. Owned means: everything on the VXLAN device; routes in the
 * main table to subnets inside the Network other than this node's own (kernel routes excluded);
 * everything in the `weft` nftables table. An empty plan means the kernel is as wanted.
 */
export function reconcile(ns: Netns, desired: DesiredState, actual: ActualState): Reconciliation {
  const plan = new Plan();
  const changes: string[] = [];
  let neighboursNow = actual.neighbours;
  let fdbNow = actual.fdb;
  let routesNow = actual.routes;

  if (actual.forwarding === false) {
    plan.sysctl(ns, 'net.ipv4.ip_forward', '1');
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
      plan.ip(ns, ['link', 'del', dev.name], 'missing');
      changes.push(`recreate device ${dev.name}: it ${wrong}`);
      link = undefined;
    }
    if (!link) {
      // Deleting or creating the device takes everything hanging off it.
      neighboursNow = [];
      fdbNow = [];
      routesNow = routesNow.filter((r) => r.dev !== dev.name);
      plan.ip(ns, [
        'link', 'add', dev.name, 'address', dev.mac, 'mtu', String(dev.mtu), 'type', 'vxlan',
        'id', String(dev.vni), 'local', dev.local, 'dev', dev.dev, 'dstport', String(dev.port), 'nolearning',
      ], 'exists');
      plan.ip(ns, ['addr', 'add', dev.address, 'dev', dev.name], 'exists');
      plan.ip(ns, ['link', 'set', dev.name, 'up']);
      if (!wrong) changes.push(`create device ${dev.name} (vxlan id ${dev.vni} local ${dev.local} dev ${dev.dev} dstport ${dev.port}, mac ${dev.mac}, mtu ${dev.mtu})`);
    } else {
      if (link.address?.toLowerCase() !== dev.mac || link.mtu !== dev.mtu) {
        plan.ip(ns, ['link', 'set', dev.name, 'address', dev.mac, 'mtu', String(dev.mtu)]);
        changes.push(`set ${dev.name} mac ${dev.mac} mtu ${dev.mtu}`);
      }
      addressAndUp(ns, dev, link, actual, plan, changes);
    }

    const wantFdb = new Set(desired.fdb.map((f) => `${f.mac}|${f.dst}`));
    for (const f of fdbNow) {
      if (f.dst === undefined || wantFdb.has(`${f.mac.toLowerCase()}|${f.dst}`)) continue;
      plan.bridge(ns, ['fdb', 'del', f.mac, 'dev', dev.name, 'dst', f.dst, 'self'], 'missing');
      changes.push(`remove stale fdb ${f.mac} dst ${f.dst} dev ${dev.name}`);
    }
    const haveFdb = new Set(fdbNow.filter((f) => f.dst !== undefined).map((f) => `${f.mac.toLowerCase()}|${f.dst}`));
    for (const f of desired.fdb) {
      if (haveFdb.has(`${f.mac}|${f.dst}`)) continue;
      plan.bridge(ns, ['fdb', 'replace', f.mac, 'dev', f.dev, 'dst', f.dst, 'self', 'permanent']);
      changes.push(`add fdb ${f.mac} dst ${f.dst} dev ${f.dev}`);
    }

    const wantNeigh = new Map(desired.neighbours.map((n) => [n.ip, n]));
    for (const n of neighboursNow) {
      if (wantNeigh.has(n.dst) || !n.state?.includes('PERMANENT')) continue;
      plan.ip(ns, ['neigh', 'del', n.dst, 'dev', dev.name], 'missing');
      changes.push(`remove stale neighbour ${n.dst} dev ${dev.name}`);
    }
    for (const n of desired.neighbours) {
      const have = neighboursNow.find((a) => a.dst === n.ip);
      if (have && have.lladdr?.toLowerCase() === n.mac && have.state?.includes('PERMANENT')) continue;
      plan.ip(ns, ['neigh', 'replace', n.ip, 'lladdr', n.mac, 'dev', n.dev, 'nud', 'permanent']);
      changes.push(`${have ? 'fix' : 'add'} neighbour ${n.ip} lladdr ${n.mac} dev ${n.dev}`);
    }
  }

  const owned = ownedRoute(desired.network, desired.ownSubnet);
  const want = new Map(desired.routes.map((r) => [r.dst, r]));
  for (const r of routesNow) {
    const dst = r.dst.includes('/') ? r.dst : `${r.dst}/32`;
    if (!owned(r) || want.has(dst)) continue;
    plan.ip(ns, ['route', 'del', dst, ...(r.gateway ? ['via', r.gateway] : []), ...(r.dev ? ['dev', r.dev] : [])], 'missing');
    changes.push(`remove stale route ${dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev ? ` dev ${r.dev}` : ''}`);
  }
  for (const r of desired.routes) {
    const have = routesNow.find((a) => (a.dst.includes('/') ? a.dst : `${a.dst}/32`) === r.dst);
    if (have && have.gateway === r.via && have.dev === r.dev && (have.flags ?? []).includes('onlink') === r.onlink) continue;
    plan.ip(ns, ['route', 'replace', r.dst, ...(r.via ? ['via', r.via] : []), 'dev', r.dev, ...(r.onlink ? ['onlink'] : [])]);
    changes.push(`${have ? 'fix' : 'add'} route ${routeText(r)}`);
  }

  firewall(ns, desired, actual.table, plan, changes);
  return { plan, changes };
}

function firewall(ns: Netns, desired: DesiredState, table: NftTable | undefined, plan: Plan, changes: string[]): void {
  const fw = desired.firewall;
  const chains = firewallChains(fw);
  const lines: string[] = [];
  const t = `${FAMILY} ${TABLE}`;
  if (!table) changes.push(`create nftables table ${t}`);
  for (const c of chains) {
    const have = table?.chains.get(c.name);
    const comments = have?.rules.map((r) => r.comment ?? '') ?? [];
    if (have && comments.join('\n') === c.comments.join('\n')) continue;
    if (have) {
      lines.push(`flush chain ${t} ${c.name}`, `delete chain ${t} ${c.name}`);
      changes.push(`rewrite nftables chain ${c.name}`);
    } else if (table) {
      changes.push(`add nftables chain ${c.name}`);
    }
    lines.push(`add chain ${t} ${c.name} { ${c.decl} }`);
    c.rules.forEach((rule, i) => lines.push(`add rule ${t} ${c.name} ${rule} comment "${c.comments[i]}"`));
  }
  for (const name of table?.chains.keys() ?? []) {
    if (chains.some((c) => c.name === name)) continue;
    lines.push(`flush chain ${t} ${name}`, `delete chain ${t} ${name}`);
    changes.push(`remove nftables chain ${name}`);
  }
  const peers = fw.vxlan?.peers ?? [];
  const havePeers = table?.sets.get(PEER_SET);
  const adds = peers.filter((p) => !havePeers?.includes(p));
  const dels = (havePeers ?? []).filter((p) => !peers.includes(p));
  if (adds.length) {
    lines.push(`add element ${t} ${PEER_SET} { ${adds.join(', ')} }`);
    changes.push(`allow VXLAN from ${adds.join(', ')}`);
  }
  if (dels.length) {
    lines.push(`delete element ${t} ${PEER_SET} { ${dels.join(', ')} }`);
    changes.push(`stop allowing VXLAN from ${dels.join(', ')}`);
  }
  const needSet = fw.vxlan !== undefined && havePeers === undefined;
  const needCounter = fw.vxlan !== undefined && !table?.counters.has(FORGED_COUNTER);
  if (lines.length === 0 && !needSet && !needCounter && table) return;
  // Objects the rules refer to come first; "add" is a no-op for what exists.
  const head = [`add table ${t}`];
  if (fw.vxlan) head.push(`add counter ${t} ${FORGED_COUNTER}`, `add set ${t} ${PEER_SET} { type ipv4_addr; }`);
  plan.nft(ns, `${[...head, ...lines].join('\n')}\n`);
}

/**
 * Routes the agent owns: main-table routes to subnets inside the Network, other than this node's
 * own subnet (the CNI bridge's kernel route) and never kernel-made ones.
 */
export function ownedRoute(network: string, ownSubnet: string): (r: Route) => boolean {
  const net = parseCidr(network);
  const own = parseCidr(ownSubnet);
  return (r) => {
    if (r.protocol === 'kernel' || r.dst === 'default' || (r.table !== undefined && r.table !== 'main')) return false;
    const dst = parseCidr(r.dst.includes('/') ? r.dst : `${r.dst}/32`);
    return dst.prefix >= net.prefix && contains(net, parseAddr(r.dst.split('/')[0]!)) && !overlaps(dst, own);
  };
}

/** The devices `weft agent --cleanup` removes: flannel.<VNI> VXLAN devices and the udp backend's flannel0 TUN. */
export const isAgentDevice = (l: Link): boolean =>
  (/^flannel\.\d+$/.test(l.ifname) && l.linkinfo?.info_kind === 'vxlan') || (l.ifname === 'flannel0' && l.linkinfo?.info_kind === 'tun');

/**
 * The plan that removes everything the agent programs (`weft agent --cleanup`): its routes, its
 * VXLAN devices (with their neighbours and fdb entries) and its nftables table.
 */
export function teardown(ns: Netns, network: string, ownSubnet: string, actual: { links: Link[]; routes: Route[]; table?: NftTable }): Reconciliation {
  const plan = new Plan();
  const changes: string[] = [];
  const owned = ownedRoute(network, ownSubnet);
  const devices = actual.links.filter(isAgentDevice).map((l) => l.ifname);
  for (const r of actual.routes) {
    if (!owned(r) || (r.dev !== undefined && devices.includes(r.dev))) continue;
    plan.ip(ns, ['route', 'del', r.dst, ...(r.gateway ? ['via', r.gateway] : [])], 'missing');
    changes.push(`remove route ${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}`);
  }
  for (const d of devices) {
    plan.ip(ns, ['link', 'del', d], 'missing');
    changes.push(`remove device ${d} (with its routes, neighbours and fdb entries)`);
  }
  if (actual.table) {
    plan.nft(ns, `delete table ${FAMILY} ${TABLE}\n`, 'missing');
    changes.push(`remove nftables table ${FAMILY} ${TABLE}`);
  }
  return { plan, changes };
}
