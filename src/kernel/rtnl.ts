import { closeSync, openSync } from 'node:fs';
import * as c from './codec.js';
import { errnoKind, KernelError } from './errors.js';
import { strerror } from './libc.js';
import type { AddLink, AddrOp, FdbOp, NeighOp, Op, RouteOp, SetLink } from './ops.js';
import type { Answer, Sock } from './socket.js';

/**
 * Ops over rtnetlink: one request per round trip, each acknowledged before the next, so a failure
 * stops the plan where it happened. Names are resolved to ifindexes right before the request that
 * needs one (RTM_GETLINK), never cached across ops.
 */
export type RtnlOp = Exclude<Op, { op: 'nft' } | { op: 'sysctl' }>;

/** Whether `op` goes over rtnetlink: everything but nftables, sysctls and TUN devices (an ioctl). */
export const speaksRtnl = (op: Op): boolean => op.op !== 'nft' && op.op !== 'sysctl' && !(op.op === 'addLink' && op.link.kind === 'tun');

function check(a: Answer, what: string): void {
  if (a.errno === 0) return;
  throw new KernelError(`${what}: ${a.ext ?? strerror(a.errno)}`, errnoKind(a.errno), what, a.errno);
}

/** The ifindex of `name`; a KernelError (missing) when there is none. */
export async function indexOf(sock: Sock, name: string, what: string): Promise<number> {
  const w = new c.Writer(c.RTM_GETLINK, 0).ifinfo(c.AF_UNSPEC, 0).str(c.IFLA_IFNAME, name).u32(c.IFLA_EXT_MASK, c.RTEXT_FILTER_SKIP_STATS);
  const a = await sock.ask(w);
  const msg = a.errno === 0 ? a.replies.find((r) => r.readUInt16LE(4) === c.RTM_NEWLINK) : undefined;
  if (!msg) throw new KernelError(`${what}: device ${name} does not exist`, 'missing', what, a.errno || 19);
  return msg.readInt32LE(16 + 4);
}

function openNs(path: string, fds: number[]): number {
  try {
    const fd = openSync(path, 'r');
    fds.push(fd);
    return fd;
  } catch (e) {
    throw new KernelError(`cannot open network namespace ${path}: ${(e as Error).message}`, 'missing');
  }
}

async function addLink(sock: Sock, op: AddLink, what: string): Promise<void> {
  const fds: number[] = [];
  try {
    const l = op.link;
    if (l.kind === 'tun') throw new KernelError(`${what}: TUN devices are made by ioctl, not rtnetlink`, 'unsupported', what);
    const w = new c.Writer(c.RTM_NEWLINK, c.NLM_F_CREATE | c.NLM_F_EXCL).ifinfo(c.AF_UNSPEC, 0);
    w.str(c.IFLA_IFNAME, op.name);
    if (op.mtu !== undefined) w.u32(c.IFLA_MTU, op.mtu);
    if (op.mac) w.attr(c.IFLA_ADDRESS, c.macBytes(op.mac));
    if (op.netns) w.u32(c.IFLA_NET_NS_FD, openNs(op.netns, fds));
    if (l.kind === 'macvlan') w.u32(c.IFLA_LINK, await indexOf(sock, l.parent, what));
    const vxlanDev = l.kind === 'vxlan' ? await indexOf(sock, l.dev, what) : 0;
    const info = w.begin(c.IFLA_LINKINFO);
    w.str(c.IFLA_INFO_KIND, l.kind);
    if (l.kind === 'veth') {
      const data = w.begin(c.IFLA_INFO_DATA);
      const peer = w.begin(c.VETH_INFO_PEER);
      w.ifinfo(c.AF_UNSPEC, 0);
      w.str(c.IFLA_IFNAME, l.peer.name);
      if (l.peer.mtu !== undefined) w.u32(c.IFLA_MTU, l.peer.mtu);
      if (l.peer.mac) w.attr(c.IFLA_ADDRESS, c.macBytes(l.peer.mac));
      if (l.peer.netns) w.u32(c.IFLA_NET_NS_FD, openNs(l.peer.netns, fds));
      w.end(peer).end(data);
    } else if (l.kind === 'vxlan') {
      const data = w.begin(c.IFLA_INFO_DATA);
      w.u32(c.IFLA_VXLAN_ID, l.vni).u32(c.IFLA_VXLAN_LINK, vxlanDev).attr(c.IFLA_VXLAN_LOCAL, c.ipBytes(l.local).bytes);
      w.u16be(c.IFLA_VXLAN_PORT, l.port).u8(c.IFLA_VXLAN_LEARNING, l.learning ? 1 : 0);
      w.end(data);
    } else if (l.kind === 'macvlan') {
      const data = w.begin(c.IFLA_INFO_DATA);
      w.u32(c.IFLA_MACVLAN_MODE, c.MACVLAN_MODE_BRIDGE);
      w.end(data);
    }
    w.end(info);
    check(await sock.ask(w), what);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

async function setLink(sock: Sock, op: SetLink, what: string): Promise<void> {
  const master = typeof op.master === 'string' ? await indexOf(sock, op.master, what) : op.master === null ? 0 : undefined;
  const plain = op.up !== undefined || op.mtu !== undefined || op.mac !== undefined || master !== undefined || op.alias !== undefined;
  if (plain) {
    const w = new c.Writer(c.RTM_NEWLINK, 0).ifinfo(c.AF_UNSPEC, 0, op.up ? c.IFF_UP : 0, op.up === undefined ? 0 : c.IFF_UP);
    w.str(c.IFLA_IFNAME, op.dev);
    if (op.mtu !== undefined) w.u32(c.IFLA_MTU, op.mtu);
    if (op.mac) w.attr(c.IFLA_ADDRESS, c.macBytes(op.mac));
    if (master !== undefined) w.u32(c.IFLA_MASTER, master);
    if (op.alias !== undefined) w.str(c.IFLA_IFALIAS, op.alias);
    check(await sock.ask(w), what);
  }
  if (op.hairpin !== undefined) {
    // Port data is applied before IFLA_MASTER within one request, so it goes in a request of its own.
    const w = new c.Writer(c.RTM_NEWLINK, 0).ifinfo(c.AF_UNSPEC, 0).str(c.IFLA_IFNAME, op.dev);
    const info = w.begin(c.IFLA_LINKINFO);
    w.str(c.IFLA_INFO_SLAVE_KIND, 'bridge');
    const data = w.begin(c.IFLA_INFO_SLAVE_DATA);
    w.u8(c.IFLA_BRPORT_MODE, op.hairpin ? 1 : 0);
    w.end(data).end(info);
    check(await sock.ask(w), what);
  }
}

async function addr(sock: Sock, op: AddrOp, what: string): Promise<void> {
  const index = await indexOf(sock, op.dev, what);
  const p = c.prefixBytes(op.addr);
  const w =
    op.op === 'delAddr'
      ? new c.Writer(c.RTM_DELADDR, 0)
      : new c.Writer(c.RTM_NEWADDR, c.NLM_F_CREATE | (op.op === 'replaceAddr' ? c.NLM_F_REPLACE : c.NLM_F_EXCL));
  const hdr = Buffer.alloc(8);
  hdr.writeUInt8(p.family, 0);
  hdr.writeUInt8(p.len, 1);
  hdr.writeUInt8(p.family === c.AF_INET && p.bytes[0] === 127 ? c.RT_SCOPE_HOST : c.RT_SCOPE_UNIVERSE, 3);
  hdr.writeUInt32LE(index, 4);
  w.raw(hdr).attr(c.IFA_LOCAL, p.bytes).attr(c.IFA_ADDRESS, p.bytes);
  check(await sock.ask(w), what);
}

async function route(sock: Sock, op: RouteOp, what: string): Promise<void> {
  const dst = c.prefixBytes(op.dst);
  const via = op.via ? c.ipBytes(op.via) : undefined;
  const family = op.dst === 'default' && via ? via.family : dst.family;
  const del = op.op === 'delRoute';
  const w = del ? new c.Writer(c.RTM_DELROUTE, 0) : new c.Writer(c.RTM_NEWROUTE, c.NLM_F_CREATE | (op.op === 'replaceRoute' ? c.NLM_F_REPLACE : c.NLM_F_EXCL));
  const hdr = Buffer.alloc(12);
  hdr.writeUInt8(family, 0);
  hdr.writeUInt8(dst.len, 1);
  hdr.writeUInt8(c.RT_TABLE_MAIN, 4);
  hdr.writeUInt8(del ? c.RTPROT_UNSPEC : c.RTPROT_BOOT, 5);
  const type = op.type === 'unreachable' ? c.RTN_UNREACHABLE : op.type === 'blackhole' ? c.RTN_BLACKHOLE : c.RTN_UNICAST;
  hdr.writeUInt8(del ? c.RT_SCOPE_NOWHERE : family === c.AF_INET && !via && !op.type ? c.RT_SCOPE_LINK : c.RT_SCOPE_UNIVERSE, 6);
  hdr.writeUInt8(del ? (op.type ? type : 0) : type, 7);
  hdr.writeUInt32LE(op.onlink ? c.RTNH_F_ONLINK : 0, 8);
  w.raw(hdr);
  if (dst.len > 0) w.attr(c.RTA_DST, family === dst.family ? dst.bytes : Buffer.alloc(16));
  if (via) w.attr(c.RTA_GATEWAY, via.bytes);
  if (op.dev) w.u32(c.RTA_OIF, await indexOf(sock, op.dev, what));
  check(await sock.ask(w), what);
}

function ndmsg(family: number, index: number, state: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt16LE(state, 8);
  b.writeUInt8(flags, 10);
  return b;
}

async function neigh(sock: Sock, op: NeighOp, what: string): Promise<void> {
  const index = await indexOf(sock, op.dev, what);
  const dst = c.ipBytes(op.dst);
  const set = op.op === 'setNeigh';
  const w = set ? new c.Writer(c.RTM_NEWNEIGH, c.NLM_F_CREATE | c.NLM_F_REPLACE) : new c.Writer(c.RTM_DELNEIGH, 0);
  w.raw(ndmsg(dst.family, index, set ? c.NUD_PERMANENT : 0, 0)).attr(c.NDA_DST, dst.bytes);
  if (set) w.attr(c.NDA_LLADDR, c.macBytes(op.mac!));
  check(await sock.ask(w), what);
}

async function fdb(sock: Sock, op: FdbOp, what: string): Promise<void> {
  const index = await indexOf(sock, op.dev, what);
  const w =
    op.op === 'delFdb'
      ? new c.Writer(c.RTM_DELNEIGH, 0)
      : new c.Writer(c.RTM_NEWNEIGH, c.NLM_F_CREATE | (op.op === 'replaceFdb' ? c.NLM_F_REPLACE : c.NLM_F_EXCL));
  w.raw(ndmsg(c.AF_BRIDGE, index, op.op === 'delFdb' ? 0 : c.NUD_PERMANENT, c.NTF_SELF))
    .attr(c.NDA_LLADDR, c.macBytes(op.mac))
    .attr(c.NDA_DST, c.ipBytes(op.dst).bytes);
  check(await sock.ask(w), what);
}

/** Executes one op; `what` names it in errors (its rendered command). */
export async function execRtnl(sock: Sock, op: RtnlOp, what: string): Promise<void> {
  switch (op.op) {
    case 'addLink':
      return addLink(sock, op, what);
    case 'setLink':
      return setLink(sock, op, what);
    case 'delLink': {
      // Deleting a device waits for RCU grace periods (≈15 ms for a veth): sent from a worker thread.
      const w = new c.Writer(c.RTM_DELLINK, 0).ifinfo(c.AF_UNSPEC, 0).str(c.IFLA_IFNAME, op.dev);
      return check(await sock.ask(w, true), what);
    }
    case 'addAddr':
    case 'replaceAddr':
    case 'delAddr':
      return addr(sock, op, what);
    case 'addRoute':
    case 'replaceRoute':
    case 'delRoute':
      return route(sock, op, what);
    case 'setNeigh':
    case 'delNeigh':
      return neigh(sock, op, what);
    case 'addFdb':
    case 'replaceFdb':
    case 'delFdb':
      return fdb(sock, op, what);
  }
}
