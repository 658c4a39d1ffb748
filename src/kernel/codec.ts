import { formatAddr, parseAddr } from '../ip/cidr.js';

/** rtnetlink message layout: constants, a request writer and attribute parsing (no I/O). */

export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_ACK_TLVS = 0x200;
export const NLM_F_CAPPED = 0x100;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSGERR_ATTR_MSG = 1;

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const AF_INET6 = 10;

export const IFF_UP = 0x1;

export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_MASTER = 10;
export const IFLA_LINKINFO = 18;
export const IFLA_IFALIAS = 20;
export const IFLA_NET_NS_FD = 28;
export const IFLA_EXT_MASK = 29;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_INFO_SLAVE_KIND = 4;
export const IFLA_INFO_SLAVE_DATA = 5;
export const VETH_INFO_PEER = 1;
export const IFLA_BRPORT_MODE = 4;
export const IFLA_MACVLAN_MODE = 1;
export const MACVLAN_MODE_BRIDGE = 4;
export const IFLA_VXLAN_ID = 1;
export const IFLA_VXLAN_LINK = 3;
export const IFLA_VXLAN_LOCAL = 4;
export const IFLA_VXLAN_LEARNING = 7;
export const IFLA_VXLAN_PORT = 15;
export const IFLA_TUN_TYPE = 3;
export const IFLA_TUN_PI = 4;
export const IFLA_TUN_MULTI_QUEUE = 7;
export const RTEXT_FILTER_SKIP_STATS = 8;

export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;

export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_TABLE = 15;
export const RT_TABLE_MAIN = 254;
export const RTPROT_UNSPEC = 0;
export const RTPROT_BOOT = 3;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
export const RT_SCOPE_NOWHERE = 255;
export const RTN_UNICAST = 1;
export const RTN_BLACKHOLE = 6;
export const RTN_UNREACHABLE = 7;
export const RTNH_F_ONLINK = 4;

export const NDA_DST = 1;
export const NDA_LLADDR = 2;
export const NDA_IFINDEX = 8;
export const NUD_PERMANENT = 0x80;
export const NTF_SELF = 0x02;

const align = (n: number): number => (n + 3) & ~3;

/** One request: header, fixed part, attributes (nests by begin/end). */
export class Writer {
  private buf = Buffer.alloc(512);
  private off = 16;

  constructor(
    readonly type: number,
    readonly flags: number,
  ) {}

  private room(n: number): void {
    if (this.off + n + 4 <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.off + n + 64));
    this.buf.copy(next);
    this.buf = next;
  }

  raw(b: Buffer): this {
    this.room(b.length);
    b.copy(this.buf, this.off);
    this.off += align(b.length);
    return this;
  }

  /** struct ifinfomsg. */
  ifinfo(family: number, index: number, flags = 0, change = 0): this {
    const b = Buffer.alloc(16);
    b.writeUInt8(family, 0);
    b.writeInt32LE(index, 4);
    b.writeUInt32LE(flags, 8);
    b.writeUInt32LE(change, 12);
    return this.raw(b);
  }

  attr(type: number, data: Buffer): this {
    this.room(4 + data.length);
    this.buf.writeUInt16LE(4 + data.length, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    data.copy(this.buf, this.off + 4);
    this.off += align(4 + data.length);
    return this;
  }

  u32(type: number, v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return this.attr(type, b);
  }

  u16be(type: number, v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    return this.attr(type, b);
  }

  u8(type: number, v: number): this {
    return this.attr(type, Buffer.from([v]));
  }

  /** A string attribute, NUL-terminated (the kernel's NLA_STRING and NLA_NUL_STRING both take it). */
  str(type: number, s: string): this {
    return this.attr(type, Buffer.from(`${s}\0`));
  }

  begin(type: number): number {
    this.room(4);
    const start = this.off;
    this.buf.writeUInt16LE(type, start + 2);
    this.off += 4;
    return start;
  }

  end(start: number): this {
    this.buf.writeUInt16LE(this.off - start, start);
    return this;
  }

  finish(seq: number, extraFlags: number): Buffer {
    const b = this.buf.subarray(0, this.off);
    b.writeUInt32LE(this.off, 0);
    b.writeUInt16LE(this.type, 4);
    b.writeUInt16LE(this.flags | NLM_F_REQUEST | extraFlags, 6);
    b.writeUInt32LE(seq >>> 0, 8);
    b.writeUInt32LE(0, 12);
    return b;
  }
}

export type Attrs = Map<number, Buffer>;

/** The attributes in b[off, end): the first of each type. */
export function parseAttrs(b: Buffer, off: number, end = b.length): Attrs {
  const tb: Attrs = new Map();
  while (off + 4 <= end) {
    const len = b.readUInt16LE(off);
    const type = b.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4 || off + len > end) break;
    if (!tb.has(type)) tb.set(type, b.subarray(off + 4, off + len));
    off += align(len);
  }
  return tb;
}

export const nested = (b: Buffer | undefined): Attrs => (b ? parseAttrs(b, 0) : new Map<number, Buffer>());

export const cstr = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul < 0 ? b.length : nul);
};

export const alignTo4 = align;

/** An address in network byte order. */
export function ipBytes(text: string): { family: number; bytes: Buffer } {
  const a = parseAddr(text);
  const n = a.family === 4 ? 4 : 16;
  const bytes = Buffer.alloc(n);
  let v = a.value;
  for (let i = n - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return { family: a.family === 4 ? AF_INET : AF_INET6, bytes };
}

export function bytesIp(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return formatAddr({ family: b.length === 4 ? 4 : 6, value: v });
}

export function macBytes(mac: string): Buffer {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new Error(`"${mac}" is not a MAC address (six hex pairs separated by colons)`);
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export const bytesMac = (b: Buffer): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

/** "10.1.0.0/16" → bytes and length; "default" is the family's /0. */
export function prefixBytes(text: string): { family: number; bytes: Buffer; len: number } {
  if (text === 'default') return { family: AF_INET, bytes: Buffer.alloc(4), len: 0 };
  const [ip, len] = text.split('/') as [string, string | undefined];
  const { family, bytes } = ipBytes(ip);
  const max = family === AF_INET ? 32 : 128;
  const n = len === undefined ? max : Number(len);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`"${text}" has no valid prefix length`);
  return { family, bytes, len: n };
}
