import { readFileSync } from 'node:fs';
import * as c from './codec.js';
import type { Netns } from './exec.js';
import { Sock } from './socket.js';

/**
 * Kernel state read with rtnetlink dumps (no process is started): links with their kind and VXLAN
 * or TUN data, addresses, routes, neighbours and fdb entries. Reading never changes anything.
 */
export interface Link {
  index: number;
  name: string;
  /** IFLA_INFO_KIND: bridge, veth, vxlan, tun, macvlan, ...; absent for plain devices. */
  kind?: string;
  /** The kind of the master a port belongs to (bridge). */
  slaveKind?: string;
  mac?: string;
  mtu: number;
  up: boolean;
  master?: string;
  alias?: string;
  vxlan?: { vni: number; local?: string; port: number; dev?: string; learning: boolean };
  tun?: { type: 'tun' | 'tap'; pi: boolean; multiQueue: boolean };
  /** Bridge ports: hairpin mode. */
  hairpin?: boolean;
}

export interface Addr {
  dev: string;
  family: 4 | 6;
  address: string;
  prefix: number;
}

export interface Route {
  family: 4 | 6;
  /** CIDR, or 'default'. */
  dst: string;
  via?: string;
  dev?: string;
  /** kernel, boot, static, or the number. */
  protocol: string;
  table: number;
  onlink: boolean;
  /** Set for routes that do not forward: unreachable, blackhole, prohibit, local, ... (absent: unicast). */
  type?: string;
}

export interface Neighbour {
  dst: string;
  dev: string;
  mac?: string;
  permanent: boolean;
}

/** A forwarding-database entry (VXLAN devices: MAC → remote VTEP). */
export interface FdbEntry {
  mac: string;
  dev: string;
  dst?: string;
  self: boolean;
  permanent: boolean;
}

const PROTOCOLS: Record<number, string> = { 2: 'kernel', 3: 'boot', 4: 'static' };
const ROUTE_TYPES: Record<number, string> = { 2: 'local', 3: 'broadcast', 6: 'blackhole', 7: 'unreachable', 8: 'prohibit', 9: 'throw' };

function parseLink(m: Buffer, names: Map<number, string>): Link {
  const index = m.readInt32LE(20);
  const flags = m.readUInt32LE(24);
  const tb = c.parseAttrs(m, 32, m.readUInt32LE(0));
  const link: Link = {
    index,
    name: c.cstr(tb.get(c.IFLA_IFNAME) ?? Buffer.alloc(0)),
    mtu: tb.get(c.IFLA_MTU)?.readUInt32LE(0) ?? 0,
    up: (flags & c.IFF_UP) !== 0,
  };
  const mac = tb.get(c.IFLA_ADDRESS);
  if (mac && mac.length === 6) link.mac = c.bytesMac(mac);
  const master = tb.get(c.IFLA_MASTER)?.readUInt32LE(0);
  if (master) link.master = names.get(master) ?? `if${master}`;
  const alias = tb.get(c.IFLA_IFALIAS);
  if (alias) link.alias = c.cstr(alias);
  const info = c.nested(tb.get(c.IFLA_LINKINFO));
  const kind = info.get(c.IFLA_INFO_KIND);
  if (kind) link.kind = c.cstr(kind);
  const slaveKind = info.get(c.IFLA_INFO_SLAVE_KIND);
  if (slaveKind) link.slaveKind = c.cstr(slaveKind);
  const data = c.nested(info.get(c.IFLA_INFO_DATA));
  if (link.kind === 'vxlan') {
    const local = data.get(c.IFLA_VXLAN_LOCAL);
    const dev = data.get(c.IFLA_VXLAN_LINK)?.readUInt32LE(0);
    link.vxlan = {
      vni: data.get(c.IFLA_VXLAN_ID)?.readUInt32LE(0) ?? 0,
      port: data.get(c.IFLA_VXLAN_PORT)?.readUInt16BE(0) ?? 0,
      learning: (data.get(c.IFLA_VXLAN_LEARNING)?.[0] ?? 1) !== 0,
      ...(local ? { local: c.bytesIp(local) } : {}),
      ...(dev ? { dev: names.get(dev) ?? `if${dev}` } : {}),
    };
  } else if (link.kind === 'tun') {
    link.tun = {
      type: data.get(c.IFLA_TUN_TYPE)?.[0] === 2 ? 'tap' : 'tun',
      pi: (data.get(c.IFLA_TUN_PI)?.[0] ?? 0) !== 0,
      multiQueue: (data.get(c.IFLA_TUN_MULTI_QUEUE)?.[0] ?? 0) !== 0,
    };
  }
  const slave = c.nested(info.get(c.IFLA_INFO_SLAVE_DATA));
  if (link.slaveKind === 'bridge' && slave.has(c.IFLA_BRPORT_MODE)) link.hairpin = slave.get(c.IFLA_BRPORT_MODE)![0] !== 0;
  return link;
}

function dumpLinks(sock: Sock): Link[] {
  const msgs = sock
    .dump(new c.Writer(c.RTM_GETLINK, 0).ifinfo(c.AF_UNSPEC, 0).u32(c.IFLA_EXT_MASK, c.RTEXT_FILTER_SKIP_STATS))
    .filter((m) => m.readUInt16LE(4) === c.RTM_NEWLINK);
  const names = new Map<number, string>();
  for (const m of msgs) names.set(m.readInt32LE(20), c.cstr(c.parseAttrs(m, 32, m.readUInt32LE(0)).get(c.IFLA_IFNAME) ?? Buffer.alloc(0)));
  return msgs.map((m) => parseLink(m, names));
}

const nameMap = (ls: Link[]): Map<number, string> => new Map(ls.map((l) => [l.index, l.name]));

function dumpAddrs(sock: Sock, names: Map<number, string>, family: 0 | 4 = 0): Addr[] {
  const hdr = Buffer.alloc(8);
  if (family === 4) hdr.writeUInt8(c.AF_INET, 0);
  return sock
    .dump(new c.Writer(c.RTM_GETADDR, 0).raw(hdr))
    .filter((m) => m.readUInt16LE(4) === c.RTM_NEWADDR)
    .map((m) => {
      const family = m.readUInt8(16) === c.AF_INET ? 4 : 6;
      const tb = c.parseAttrs(m, 24, m.readUInt32LE(0));
      const bytes = (family === 4 ? tb.get(c.IFA_LOCAL) : undefined) ?? tb.get(c.IFA_ADDRESS)!;
      const index = m.readUInt32LE(20);
      return { dev: names.get(index) ?? `if${index}`, family, address: c.bytesIp(bytes), prefix: m.readUInt8(17) } satisfies Addr;
    });
}

function dumpRoutes(sock: Sock, names: Map<number, string>, family: 4 | 6): Route[] {
  const hdr = Buffer.alloc(12);
  hdr.writeUInt8(family === 4 ? c.AF_INET : c.AF_INET6, 0);
  return sock
    .dump(new c.Writer(c.RTM_GETROUTE, 0).raw(hdr))
    .filter((m) => m.readUInt16LE(4) === c.RTM_NEWROUTE)
    .map((m) => {
      const tb = c.parseAttrs(m, 28, m.readUInt32LE(0));
      const len = m.readUInt8(17);
      const dst = tb.get(c.RTA_DST);
      const gw = tb.get(c.RTA_GATEWAY);
      const oif = tb.get(c.RTA_OIF)?.readUInt32LE(0);
      const r: Route = {
        family,
        dst: len === 0 ? 'default' : `${c.bytesIp(dst ?? Buffer.alloc(family === 4 ? 4 : 16))}/${len}`,
        protocol: PROTOCOLS[m.readUInt8(21)] ?? String(m.readUInt8(21)),
        table: tb.get(c.RTA_TABLE)?.readUInt32LE(0) ?? m.readUInt8(20),
        onlink: (m.readUInt32LE(24) & c.RTNH_F_ONLINK) !== 0,
      };
      const type = m.readUInt8(23);
      if (type !== c.RTN_UNICAST) r.type = ROUTE_TYPES[type] ?? String(type);
      if (gw) r.via = c.bytesIp(gw);
      if (oif) r.dev = names.get(oif) ?? `if${oif}`;
      return r;
    });
}

/**
 * A neighbour (AF_INET) or fdb (AF_BRIDGE) dump, of one device when `index` is given: the kernel
 * filters it then. IPv4 neighbours take the device as NDA_IFINDEX; an fdb dump takes it as the
 * ifi_index of an ifinfomsg header (rtnetlink.c valid_fdb_dump_legacy; an ndmsg header is not filtered).
 */
function dumpNeigh(sock: Sock, family: number, index?: number): { m: Buffer; index: number; state: number; flags: number; tb: c.Attrs }[] {
  const w = new c.Writer(c.RTM_GETNEIGH, 0);
  if (family === c.AF_BRIDGE && index !== undefined) w.ifinfo(family, index);
  else {
    const hdr = Buffer.alloc(12);
    hdr.writeUInt8(family, 0);
    w.raw(hdr);
    if (index !== undefined) w.u32(c.NDA_IFINDEX, index);
  }
  return sock
    .dump(w)
    .filter((m) => m.readUInt16LE(4) === c.RTM_NEWNEIGH && m.readUInt8(16) === family)
    .map((m) => ({ m, index: m.readInt32LE(20), state: m.readUInt16LE(24), flags: m.readUInt8(26), tb: c.parseAttrs(m, 28, m.readUInt32LE(0)) }));
}

/** The reads are synchronous syscalls; they are offered as promises, failures as rejections. */
function read<T>(fn: () => T): Promise<T> {
  return new Promise((resolve) => resolve(fn()));
}

/**
 * The socket for reads in this process's own namespace stays open (closing a netlink socket costs
 * about a millisecond, on every reconcile); reads are synchronous, so they never interleave on it.
 */
let own: Sock | undefined;

function withSock<T>(ns: Netns, fn: (s: Sock) => T): T {
  if (ns === undefined) return fn((own ??= Sock.open(undefined)));
  const sock = Sock.open(ns);
  try {
    return fn(sock);
  } finally {
    sock.close();
  }
}

export function links(ns: Netns): Promise<Link[]> {
  return read(() => withSock(ns, dumpLinks));
}

export function addrs(ns: Netns, dev?: string): Promise<Addr[]> {
  return read(() => withSock(ns, (s) => dumpAddrs(s, nameMap(dumpLinks(s)))).filter((a) => dev === undefined || a.dev === dev));
}

/** Routes of one table (main by default). */
export function routes(ns: Netns, opts: { family?: 4 | 6; table?: number } = {}): Promise<Route[]> {
  const table = opts.table ?? c.RT_TABLE_MAIN;
  return read(() => withSock(ns, (s) => dumpRoutes(s, nameMap(dumpLinks(s)), opts.family ?? 4)).filter((r) => r.table === table));
}

/** IPv4 neighbours (of `dev`). */
export function neighbours(ns: Netns, dev?: string): Promise<Neighbour[]> {
  return read(() => withSock(ns, (s) => neighboursOf(s, nameMap(dumpLinks(s)))).filter((n) => dev === undefined || n.dev === dev));
}

function neighboursOf(s: Sock, names: Map<number, string>, index?: number): Neighbour[] {
  return dumpNeigh(s, c.AF_INET, index).map(({ index, state, tb }) => {
    const mac = tb.get(c.NDA_LLADDR);
    return {
      dst: c.bytesIp(tb.get(c.NDA_DST)!),
      dev: names.get(index) ?? `if${index}`,
      ...(mac && mac.length === 6 ? { mac: c.bytesMac(mac) } : {}),
      permanent: (state & c.NUD_PERMANENT) !== 0,
    };
  });
}

/** Bridge/VXLAN forwarding-database entries (of `dev`). */
export function fdb(ns: Netns, dev?: string): Promise<FdbEntry[]> {
  return read(() => withSock(ns, (s) => fdbOf(s, nameMap(dumpLinks(s)))).filter((f) => dev === undefined || f.dev === dev));
}

function fdbOf(s: Sock, names: Map<number, string>, index?: number): FdbEntry[] {
  return dumpNeigh(s, c.AF_BRIDGE, index).map(({ index, state, flags, tb }) => {
    const dst = tb.get(c.NDA_DST);
    return {
      mac: c.bytesMac(tb.get(c.NDA_LLADDR) ?? Buffer.alloc(6)),
      dev: names.get(index) ?? `if${index}`,
      ...(dst ? { dst: c.bytesIp(dst) } : {}),
      self: (flags & c.NTF_SELF) !== 0,
      permanent: (state & c.NUD_PERMANENT) !== 0,
    };
  });
}

export interface Snapshot {
  links: Link[];
  /** IPv4 addresses. */
  addrs: Addr[];
  /** The main table's IPv4 routes. */
  routes: Route[];
  /** IPv4 neighbours. */
  neighbours: Neighbour[];
  fdb: FdbEntry[];
}

/**
 * Links, IPv4 addresses, main-table IPv4 routes, IPv4 neighbours and fdb entries, over one socket.
 * With `neighboursOf`, the neighbours and fdb entries of those devices only (the kernel filters the
 * dumps): a node's underlay holds an entry per node that the agent never reads.
 */
export function snapshot(ns: Netns, o: { neighboursOf?: string[] } = {}): Promise<Snapshot> {
  return read(() =>
    withSock(ns, (s) => {
      const ls = dumpLinks(s);
      const names = nameMap(ls);
      const indexes = o.neighboursOf?.flatMap((dev) => ls.find((l) => l.name === dev)?.index ?? []) ?? [undefined];
      return {
        links: ls,
        addrs: dumpAddrs(s, names, 4),
        routes: dumpRoutes(s, names, 4).filter((r) => r.table === c.RT_TABLE_MAIN),
        neighbours: indexes.flatMap((i) => neighboursOf(s, names, i)),
        fdb: indexes.flatMap((i) => fdbOf(s, names, i)),
      };
    }),
  );
}

export { cachedRuleset, nftRuleset, nftTable } from './nfnl.js';
export type { NftChainState, NftRuleState, NftTableState } from './nft.js';

async function getLink(sock: Sock, by: string | number): Promise<Buffer | undefined> {
  const w = new c.Writer(c.RTM_GETLINK, 0).ifinfo(c.AF_UNSPEC, typeof by === 'number' ? by : 0);
  if (typeof by === 'string') w.str(c.IFLA_IFNAME, by);
  const a = await sock.ask(w.u32(c.IFLA_EXT_MASK, c.RTEXT_FILTER_SKIP_STATS));
  return a.errno === 0 ? a.replies.find((r) => r.readUInt16LE(4) === c.RTM_NEWLINK) : undefined;
}

/** One link by name (RTM_GETLINK, no dump); undefined when there is none. */
export async function link(ns: Netns, name: string): Promise<Link | undefined> {
  const sock = Sock.open(ns);
  try {
    const m = await getLink(sock, name);
    if (!m) return undefined;
    // The master's and the VXLAN underlay's names, by index.
    const names = new Map<number, string>();
    const tb = c.parseAttrs(m, 32, m.readUInt32LE(0));
    const info = c.nested(tb.get(c.IFLA_LINKINFO));
    const vxlanDev =
      info.get(c.IFLA_INFO_KIND) && c.cstr(info.get(c.IFLA_INFO_KIND)!) === 'vxlan' ? c.nested(info.get(c.IFLA_INFO_DATA)).get(c.IFLA_VXLAN_LINK) : undefined;
    for (const idx of [tb.get(c.IFLA_MASTER)?.readUInt32LE(0), vxlanDev?.readUInt32LE(0)]) {
      const other = idx ? await getLink(sock, idx) : undefined;
      if (idx && other) names.set(idx, c.cstr(c.parseAttrs(other, 32, other.readUInt32LE(0)).get(c.IFLA_IFNAME) ?? Buffer.alloc(0)));
    }
    return parseLink(m, names);
  } finally {
    sock.close();
  }
}

/** Interface names in this process's own namespace, from /proc/self/net/dev (per-namespace; no socket). */
export function localLinkNames(): Set<string> {
  const text = readFileSync('/proc/self/net/dev', 'utf8');
  return new Set(
    text
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]!.trim())
      .filter(Boolean),
  );
}
