import { AF_INET, AF_INET6, bytesIp, ipBytes, nested, parseAttrs, Writer, type Attrs } from './codec.js';
import { errnoKind, KernelError } from './errors.js';
import type { Netns } from './exec.js';
import { strerror } from './libc.js';
import { Sock } from './socket.js';

/**
 * Conntrack entries over ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK) in a namespace, without
 * starting the `conntrack` tool: one dump of the table, and deletes by original tuple on the same socket.
 */
const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const NLA_F_NESTED = 0x8000;
const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_REPLY = 2;
const CTA_STATUS = 3;
const CTA_ID = 12;
const CTA_ZONE = 18;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;
const IPS_DST_NAT = 1 << 5;
const ENOENT = 2;

export const IPPROTO = { tcp: 6, udp: 17 } as const;

/** One direction of an entry; ports only for protocols that have them. */
export interface CtTuple {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
}

export interface CtEntry {
  /** The IP protocol number (IPPROTO). */
  proto: number;
  orig: CtTuple;
  /** The reply direction: its source is where a DNAT sent the flow. */
  reply: CtTuple;
  /** A DNAT changed the destination (IPS_DST_NAT). */
  dstNat: boolean;
  zone: number;
  /** The kernel's id of the entry: deleting by it leaves a newer entry of the same tuple alone. */
  id: number;
}

/** Which entries to delete: every field given must be equal (as `conntrack -D`'s options of the same names). */
export interface FlowFilter {
  origSrc?: string;
  origDst?: string;
  /** The original direction's source port. */
  sport?: number;
  origDport?: number;
  replySrc?: string;
  replySport?: number;
  dstNat?: boolean;
}

export function matchFlow(e: CtEntry, f: FlowFilter): boolean {
  return (
    (f.origDport === undefined || f.origDport === e.orig.dport) &&
    (f.origDst === undefined || f.origDst === e.orig.dst) &&
    (f.origSrc === undefined || f.origSrc === e.orig.src) &&
    (f.sport === undefined || f.sport === e.orig.sport) &&
    (f.replySrc === undefined || f.replySrc === e.reply.src) &&
    (f.replySport === undefined || f.replySport === e.reply.sport) &&
    (f.dstNat === undefined || f.dstNat === e.dstNat)
  );
}

const request = (type: number, family: number): Writer => new Writer((NFNL_SUBSYS_CTNETLINK << 8) | type, 0).raw(Buffer.from([family, 0, 0, 0]));

function tuple(tb: Attrs): CtTuple {
  const ip = nested(tb.get(CTA_TUPLE_IP));
  const l4 = nested(tb.get(CTA_TUPLE_PROTO));
  const src = ip.get(CTA_IP_V4_SRC) ?? ip.get(CTA_IP_V6_SRC);
  const dst = ip.get(CTA_IP_V4_DST) ?? ip.get(CTA_IP_V6_DST);
  const sport = l4.get(CTA_PROTO_SRC_PORT);
  const dport = l4.get(CTA_PROTO_DST_PORT);
  return {
    src: src ? bytesIp(src) : '',
    dst: dst ? bytesIp(dst) : '',
    ...(sport && { sport: sport.readUInt16BE(0) }),
    ...(dport && { dport: dport.readUInt16BE(0) }),
  };
}

/** Every entry of the table (of protocol `proto` only, when given). */
function dump(sock: Sock, proto?: number): CtEntry[] {
  const out: CtEntry[] = [];
  for (const m of sock.dump(request(IPCTNL_MSG_CT_GET, 0))) {
    if (m.readUInt16LE(4) >> 8 !== NFNL_SUBSYS_CTNETLINK) continue;
    const tb = parseAttrs(m, 20, m.readUInt32LE(0));
    const orig = nested(tb.get(CTA_TUPLE_ORIG));
    const num = nested(orig.get(CTA_TUPLE_PROTO)).get(CTA_PROTO_NUM)?.readUInt8(0);
    if (num === undefined || (proto !== undefined && num !== proto)) continue;
    out.push({
      proto: num,
      orig: tuple(orig),
      reply: tuple(nested(tb.get(CTA_TUPLE_REPLY))),
      dstNat: ((tb.get(CTA_STATUS)?.readUInt32BE(0) ?? 0) & IPS_DST_NAT) !== 0,
      zone: tb.get(CTA_ZONE)?.readUInt16BE(0) ?? 0,
      id: tb.get(CTA_ID)?.readUInt32BE(0) ?? 0,
    });
  }
  return out;
}

/** Deletes one entry of a protocol with ports by its original tuple; false when it was gone already. */
async function remove(sock: Sock, e: CtEntry): Promise<boolean> {
  const src = ipBytes(e.orig.src);
  const v4 = src.family === AF_INET;
  const w = request(IPCTNL_MSG_CT_DELETE, v4 ? AF_INET : AF_INET6);
  const t = w.begin(CTA_TUPLE_ORIG | NLA_F_NESTED);
  const ip = w.begin(CTA_TUPLE_IP | NLA_F_NESTED);
  w.attr(v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, src.bytes).attr(v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, ipBytes(e.orig.dst).bytes);
  w.end(ip);
  const l4 = w.begin(CTA_TUPLE_PROTO | NLA_F_NESTED);
  w.u8(CTA_PROTO_NUM, e.proto)
    .u16be(CTA_PROTO_SRC_PORT, e.orig.sport ?? 0)
    .u16be(CTA_PROTO_DST_PORT, e.orig.dport ?? 0);
  w.end(l4).end(t);
  if (e.zone !== 0) w.u16be(CTA_ZONE, e.zone);
  const id = Buffer.alloc(4);
  id.writeUInt32BE(e.id);
  w.attr(CTA_ID, id);
  const a = await sock.ask(w);
  if (a.errno === ENOENT) return false;
  if (a.errno !== 0) {
    const what = `delete conntrack entry ${e.orig.src}:${e.orig.sport} → ${e.orig.dst}:${e.orig.dport}`;
    throw new KernelError(`${what}: ${a.ext ?? strerror(a.errno)}`, errnoKind(a.errno), what, a.errno);
  }
  return true;
}

async function withCt<T>(ns: Netns, fn: (s: Sock) => T | Promise<T>): Promise<T> {
  const sock = Sock.open(ns, 'netfilter');
  try {
    return await fn(sock);
  } catch (e) {
    if (e instanceof KernelError) throw new KernelError(`conntrack over netlink: ${e.message}`, e.kind, e.op, e.errno);
    throw e;
  } finally {
    sock.close();
  }
}

/** The namespace's conntrack entries (of protocol `proto` only, when given): one dump. */
export function listEntries(ns: Netns, proto?: number): Promise<CtEntry[]> {
  return withCt(ns, (s) => dump(s, proto));
}

/**
 * One dump of the namespace's UDP entries, then a delete of each entry `stale` picks from them, on
 * the same socket; returns how many went. An entry that went meanwhile is not an error.
 */
export function clearUdp(ns: Netns, stale: (entries: CtEntry[]) => CtEntry[]): Promise<number> {
  return withCt(ns, async (s) => {
    let deleted = 0;
    for (const e of stale(dump(s, IPPROTO.udp))) if (await remove(s, e)) deleted++;
    return deleted;
  });
}
