/**
 * The udp backend's per-packet work, as pure functions over IPv4 packets in Buffers (no I/O), so they
 * are unit-tested without root and shared by the packet loop (udp-worker.ts).
 *
 * Addresses are unsigned 32-bit numbers (host order of the dotted form: 10.244.1.0 = 0x0af40100).
 */

export const IPV4_MIN_HEADER = 20;
/** The most bytes one UDP GSO send takes (they form one UDP payload before the kernel cuts it). */
export const UDP_GSO_MAX_BYTES = 65507;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_NET_UNREACH = 0;

export const ipToU32 = (ip: string): number => {
  const p = ip.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
};
export const u32ToIp = (v: number): string => `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
export const prefixMask = (prefix: number): number => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** The Internet checksum (RFC 1071) of b[start, end). */
export function internetChecksum(b: Uint8Array, start = 0, end = b.length): number {
  let sum = 0;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (i < end) sum += b[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * Checks that b[o, o+n) starts with a plausible IPv4 header and returns the packet's length (the
 * header's total length), or 0 when it is not IPv4, the header is cut short, or the total length
 * is smaller than the header or larger than what was received.
 */
export function ipv4Length(b: Uint8Array, n: number, o = 0): number {
  if (n < IPV4_MIN_HEADER) return 0;
  const vihl = b[o]!;
  if (vihl >> 4 !== 4) return 0;
  const ihl = (vihl & 15) * 4;
  if (ihl < IPV4_MIN_HEADER || ihl > n) return 0;
  const total = (b[o + 2]! << 8) | b[o + 3]!;
  if (total < ihl || total > n) return 0;
  return total;
}

export const srcOf = (b: Uint8Array): number => ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
export const dstOf = (b: Uint8Array): number => ((b[16]! << 24) | (b[17]! << 16) | (b[18]! << 8) | b[19]!) >>> 0;

/**
 * Decrements the TTL of the IPv4 header at b[0] and updates its checksum incrementally
 * (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m'), m the 16-bit word holding TTL and protocol).
 * Returns false, changing nothing, when the TTL is 0 or 1 (the packet must not be forwarded).
 */
export function decrementTtl(b: Uint8Array): boolean {
  const ttl = b[8]!;
  if (ttl <= 1) return false;
  const m = (ttl << 8) | b[9]!;
  const m2 = m - 0x100;
  b[8] = ttl - 1;
  const hc = (b[10]! << 8) | b[11]!;
  let sum = (~hc & 0xffff) + (~m & 0xffff) + m2;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  const out = ~sum & 0xffff;
  b[10] = out >>> 8;
  b[11] = out & 255;
  return true;
}

/** Whether an ICMP error may be sent about this packet (RFC 1812 4.3.2.7). */
export function mayAnswerWithIcmpError(b: Uint8Array, len: number): boolean {
  const fragOffset = ((b[6]! & 0x1f) << 8) | b[7]!;
  if (fragOffset !== 0) return false;
  const src = srcOf(b);
  const dst = dstOf(b);
  // Not to/from multicast, broadcast, the unspecified address or loopback.
  if (src >>> 28 === 0xe || dst >>> 28 === 0xe || src === 0 || dst === 0xffffffff || src === 0xffffffff || src >>> 24 === 127) return false;
  if (b[9] === 1) {
    // Not about an ICMP error (only about queries: echo 8/0, timestamp 13/14, ...).
    const ihl = (b[0]! & 15) * 4;
    if (len < ihl + 1) return false;
    const type = b[ihl]!;
    if (type === 3 || type === 4 || type === 5 || type === 11 || type === 12) return false;
  }
  return true;
}

/**
 * An ICMP error (type/code) about the packet b[0, len), from `from`: an IPv4 header, the ICMP
 * header and the offending packet's IP header plus its first 8 bytes of payload (RFC 792), written
 * into `out` (≥ 20 + 8 + 60 + 8 bytes). Returns the length written.
 */
export function icmpError(out: Uint8Array, b: Uint8Array, len: number, from: number, type: number, code: number): number {
  const ihl = (b[0]! & 15) * 4;
  const quoted = Math.min(len, ihl + 8);
  const total = 20 + 8 + quoted;
  out.fill(0, 0, 28);
  out[0] = 0x45;
  out[1] = 0xc0; // internetwork control, as Linux marks ICMP errors
  out[2] = total >>> 8;
  out[3] = total & 255;
  out[8] = 64;
  out[9] = 1;
  out[12] = from >>> 24;
  out[13] = (from >>> 16) & 255;
  out[14] = (from >>> 8) & 255;
  out[15] = from & 255;
  out.set(b.subarray(12, 16), 16); // back to the offender's source
  const hc = internetChecksum(out, 0, 20);
  out[10] = hc >>> 8;
  out[11] = hc & 255;
  out[20] = type;
  out[21] = code;
  out.set(b.subarray(0, quoted), 28);
  const ic = internetChecksum(out, 20, total);
  out[22] = ic >>> 8;
  out[23] = ic & 255;
  return total;
}

export const icmpNetUnreachable = (out: Uint8Array, b: Uint8Array, len: number, from: number): number =>
  icmpError(out, b, len, from, ICMP_DEST_UNREACH, ICMP_NET_UNREACH);

export interface Peer {
  /** The remote lease's subnet (base, prefix length). */
  base: number;
  prefix: number;
  /** The remote node's PublicIP. */
  publicIP: number;
}

/**
 * Remote subnets → PublicIP, by longest prefix: one Map per distinct prefix length, longest first
 * (leases of one network share one SubnetLen, so a lookup is usually a single Map.get).
 */
export class PeerTable {
  private readonly levels: { mask: number; map: Map<number, number> }[] = [];
  /** PublicIPs that hold a lease: datagrams from anyone else are dropped. */
  readonly sources = new Set<number>();

  constructor(peers: Peer[]) {
    const byPrefix = new Map<number, Map<number, number>>();
    for (const p of peers) {
      let m = byPrefix.get(p.prefix);
      if (!m) byPrefix.set(p.prefix, (m = new Map<number, number>()));
      m.set((p.base & prefixMask(p.prefix)) >>> 0, p.publicIP);
      this.sources.add(p.publicIP);
    }
    for (const prefix of [...byPrefix.keys()].sort((a, b) => b - a)) this.levels.push({ mask: prefixMask(prefix), map: byPrefix.get(prefix)! });
  }

  /** The PublicIP of the node whose subnet holds `dst`, or undefined. */
  lookup(dst: number): number | undefined {
    for (const l of this.levels) {
      const hit = l.map.get((dst & l.mask) >>> 0);
      if (hit !== undefined) return hit;
    }
    return undefined;
  }
}

const fold = (s: number): number => {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
};

/** The ones'-complement sum of the 16-bit big-endian words of b[start, end) (end - start even). */
function sumWords(b: Uint8Array, start: number, end: number): number {
  let s = 0;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  return s;
}

/**
 * A ones'-complement sum, folded to 16 bits, not complemented, in network byte order, of the bytes
 * [start, end) of the packet's ArrayBuffer (not of the view): Checksummer.sum (udp-csum.ts).
 */
export type SumFn = (start: number, end: number) => number;

/** virtio_net_hdr fields the tx loop needs (little-endian, as the TUN device writes them). */
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;

/**
 * Completes a partial checksum (virtio NEEDS_CSUM): the field at csumStart + csumOffset holds the
 * pseudo-header sum; the checksum covers [csumStart, len).
 */
export function completeChecksum(b: Uint8Array, sum: SumFn, len: number, csumStart: number, csumOffset: number): boolean {
  const at = csumStart + csumOffset;
  if (at + 2 > len) return false;
  const c = ~sum(b.byteOffset + csumStart, b.byteOffset + len) & 0xffff;
  b[at] = c >>> 8;
  b[at + 1] = c & 255;
  return true;
}

/** How segmentTcp cut a packet: `count` segments of `hl` header bytes and at most `mss` payload bytes. */
export interface Segments {
  count: number;
  hl: number;
  mss: number;
  /** The segments' bytes, headers included. */
  bytes: number;
}

/**
 * Cuts a TCP/IPv4 super-packet b[0, len) (a TSO packet from the TUN device) into segments of at
 * most `mss` payload bytes, as a NIC's TSO would, without moving its payload: segment i is the
 * header hdrs[i·hl, (i+1)·hl) followed by the payload b[hl + i·mss, hl + min((i+1)·mss, len − hl)).
 * Each header has its own IP total length, ID, header checksum, TCP sequence number, flags and
 * checksum. Every segment but the last has the same size. Sets r.count to 0 when the packet cannot
 * be segmented (or its headers do not fit in hdrs).
 */
export function segmentTcp(b: Uint8Array, len: number, mss: number, sum: SumFn, hdrs: Uint8Array, r: Segments): void {
  r.count = 0;
  const ihl = (b[0]! & 15) * 4;
  if (b[9] !== 6 || len < ihl + 20) return;
  const thl = (b[ihl + 12]! >> 4) * 4;
  const hl = ihl + thl;
  if (thl < 20 || hl > len || mss <= 0) return;
  const payload = len - hl;
  const count = Math.max(1, Math.ceil(payload / mss));
  if (count * hl > hdrs.length) return;
  const id = (b[4]! << 8) | b[5]!;
  const seq = ((b[ihl + 4]! << 24) | (b[ihl + 5]! << 16) | (b[ihl + 6]! << 8) | b[ihl + 7]!) >>> 0;
  const flags = b[ihl + 13]!;
  const src = srcOf(b);
  const dst = dstOf(b);
  const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + thl;
  const data = b.byteOffset + hl;
  hdrs.set(b.subarray(0, hl), 0);
  // From the last to the first, so that slot 0 still holds the original header while it is copied.
  for (let i = count - 1; i >= 0; i--) {
    const o = i * hl;
    if (i > 0) hdrs.copyWithin(o, 0, hl);
    const off = i * mss;
    const chunk = Math.min(mss, payload - off);
    const seg = hl + chunk;
    hdrs[o + 2] = seg >>> 8;
    hdrs[o + 3] = seg & 255;
    const sid = (id + i) & 0xffff;
    hdrs[o + 4] = sid >>> 8;
    hdrs[o + 5] = sid & 255;
    hdrs[o + 10] = 0;
    hdrs[o + 11] = 0;
    const hc = ~fold(sumWords(hdrs, o, o + ihl)) & 0xffff;
    hdrs[o + 10] = hc >>> 8;
    hdrs[o + 11] = hc & 255;
    const t = o + ihl;
    const s = (seq + off) >>> 0;
    hdrs[t + 4] = s >>> 24;
    hdrs[t + 5] = (s >>> 16) & 255;
    hdrs[t + 6] = (s >>> 8) & 255;
    hdrs[t + 7] = s & 255;
    let f = flags;
    if (i < count - 1) f &= ~0x09; // FIN and PSH only on the last segment
    if (i > 0) f &= ~0x80; // CWR only on the first
    hdrs[t + 13] = f;
    hdrs[t + 16] = 0;
    hdrs[t + 17] = 0;
    // The payload starts at an even offset of the segment (hl is a multiple of 4), so its sum adds in.
    const payloadSum = chunk > 0 ? sum(data + off, data + off + chunk) : 0;
    const tc = ~fold(sumWords(hdrs, t, t + thl) + payloadSum + pseudo + chunk) & 0xffff;
    hdrs[t + 16] = tc >>> 8;
    hdrs[t + 17] = tc & 255;
  }
  r.count = count;
  r.hl = hl;
  r.mss = mss;
  r.bytes = count * hl + payload;
}

/** TCP flags. */
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
/** The largest IPv4 packet: a coalesced run never grows past it. */
const IPV4_MAX = 65535;
const VNET_HDR = 10;

/**
 * Whether b[o, o+len) (a valid IPv4 packet of total length len) may take part in a coalesced run:
 * TCP with an options-free IP header and a correct header checksum, not a fragment, carrying data,
 * and flags ACK or ACK|PSH only (no SYN/FIN/RST/URG/ECE/CWR). Returns the IP+TCP header length, or 0.
 */
export function coalescibleTcp(b: Uint8Array, o: number, len: number): number {
  if (b[o] !== 0x45 || b[o + 9] !== 6 || len < 40) return 0;
  if ((b[o + 6]! & 0x3f) !== 0 || b[o + 7] !== 0) return 0; // MF or a fragment offset
  const thl = (b[o + 32]! >> 4) * 4;
  const hl = 20 + thl;
  if (thl < 20 || hl >= len) return 0;
  if ((b[o + 33]! & ~TCP_PSH) !== TCP_ACK) return 0;
  let sum = 0;
  for (let i = o; i < o + 20; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  return fold(sum) === 0xffff ? hl : 0;
}

/** Room for the run's IP + TCP header (at most 60 + 60 bytes) behind the virtio header. */
const HEAD_MAX = VNET_HDR + 120;
/** A run's pieces, head aside: writev takes at most IOV_MAX (1024) iovecs. */
export const MAX_SLICES = 1023;

/**
 * The receive side's coalescing, the job a NIC's GRO does: consecutive in-order TCP segments of one
 * flow (same addresses, ports, TOS, TTL, DF, ACK number and TCP options; contiguous sequence
 * numbers; every segment but the last carrying exactly the first one's payload size) are merged
 * into one large TCP/IPv4 packet and emitted once with a virtio_net_hdr (GSO TCPV4, gso_size = that
 * payload size, NEEDS_CSUM over the TCP part, the pseudo-header sum in the TCP checksum field), so
 * the kernel takes it as it takes GRO output. Every other packet, and a run of one, is emitted as it
 * came, one at a time, behind a zero virtio_net_hdr. Packet order is kept.
 *
 * Nothing is copied but the first header: an emitted packet is `head[0, headLen)` (the virtio header,
 * then for a run the first segment's IP + TCP header rewritten for the whole run) followed by the
 * slices `src[sliceAt[i], sliceAt[i] + sliceLen[i])` for i < slices (the run's payloads, or the one
 * packet whole), which the caller hands to writev. So the bytes added must stay where they are until
 * the run is emitted: the caller flushes before it overwrites them, and a packet from another buffer
 * starts a new run. `emit(headLen, packets, bytes)` also says how many received packets it carries
 * and their summed lengths.
 */
export class TcpCoalescer {
  readonly head = Buffer.alloc(HEAD_MAX);
  readonly sliceAt = new Int32Array(MAX_SLICES);
  readonly sliceLen = new Int32Array(MAX_SLICES);
  slices = 0;
  /** The buffer the run's packets are in. */
  src: Uint8Array = this.head;
  /** The run's first packet: src[first, first + firstLen). */
  private first = 0;
  private firstLen = 0;
  /** The run's IP length so far. */
  private len = 0;
  private bytes = 0;
  private hl = 0;
  private gsoSize = 0;
  private nextSeq = 0;
  /** The last segment was short or had PSH: nothing may follow it. */
  private closed = false;
  private lastFlags = 0;
  private lastWindow = 0;

  constructor(private readonly emit: (headLen: number, packets: number, bytes: number) => void) {}

  /** Adds the valid IPv4 packet b[o, o+len). */
  add(b: Uint8Array, o: number, len: number): void {
    const hl = coalescibleTcp(b, o, len);
    if (hl !== 0 && this.slices > 0 && this.appendable(b, o, len, hl)) {
      const payload = len - hl;
      this.sliceAt[this.slices] = o + hl;
      this.sliceLen[this.slices++] = payload;
      this.len += payload;
      this.bytes += len;
      this.nextSeq = (this.nextSeq + payload) >>> 0;
      this.lastFlags = b[o + 33]!;
      this.lastWindow = (b[o + 34]! << 8) | b[o + 35]!;
      this.closed = payload < this.gsoSize || (this.lastFlags & TCP_PSH) !== 0;
      return;
    }
    this.flush();
    this.src = b;
    this.first = o;
    this.firstLen = len;
    this.len = len;
    this.bytes = len;
    this.slices = 1;
    if (hl === 0) {
      this.flush();
      return;
    }
    this.sliceAt[0] = o + hl;
    this.sliceLen[0] = len - hl;
    this.hl = hl;
    this.gsoSize = len - hl;
    this.nextSeq = (tcpSeq(b, o) + this.gsoSize) >>> 0;
    this.lastFlags = b[o + 33]!;
    this.lastWindow = (b[o + 34]! << 8) | b[o + 35]!;
    this.closed = (this.lastFlags & TCP_PSH) !== 0;
  }

  private appendable(b: Uint8Array, o: number, len: number, hl: number): boolean {
    const h = this.src;
    const f = this.first;
    if (b !== h || this.closed || this.slices === MAX_SLICES || hl !== this.hl || len - hl > this.gsoSize || this.len + len - hl > IPV4_MAX) return false;
    if (tcpSeq(b, o) !== this.nextSeq) return false;
    // TOS, DF, TTL, addresses; ports; ACK number; options.
    if (b[o + 1] !== h[f + 1] || b[o + 6] !== h[f + 6] || b[o + 8] !== h[f + 8]) return false;
    for (let i = 12; i < 24; i++) if (b[o + i] !== h[f + i]) return false;
    for (let i = 28; i < 32; i++) if (b[o + i] !== h[f + i]) return false;
    for (let i = 40; i < hl; i++) if (b[o + i] !== h[f + i]) return false;
    return true;
  }

  /** Whether a run is being built whose first packet lies in src[from, to). */
  startsIn(from: number, to: number): boolean {
    return this.slices > 0 && this.first >= from && this.first < to;
  }

  /** Emits the run being built, if any. */
  flush(): void {
    if (this.slices === 0) return;
    const head = this.head;
    head.fill(0, 0, VNET_HDR);
    let headLen = VNET_HDR;
    if (this.slices === 1) {
      this.sliceAt[0] = this.first;
      this.sliceLen[0] = this.firstLen;
    } else {
      const n = this.len;
      const p = head.subarray(VNET_HDR);
      p.set(this.src.subarray(this.first, this.first + this.hl));
      headLen += this.hl;
      p[2] = n >>> 8;
      p[3] = n & 255;
      p[10] = 0;
      p[11] = 0;
      const hc = ~fold(sumWords(p, 0, 20)) & 0xffff;
      p[10] = hc >>> 8;
      p[11] = hc & 255;
      p[33] = this.lastFlags;
      p[34] = this.lastWindow >>> 8;
      p[35] = this.lastWindow & 255;
      const ps = fold(sumWords(p, 12, 20) + 6 + n - 20);
      p[36] = ps >>> 8;
      p[37] = ps & 255;
      head[0] = VNET_F_NEEDS_CSUM;
      head[1] = VNET_GSO_TCPV4;
      head.writeUInt16LE(this.hl, 2);
      head.writeUInt16LE(this.gsoSize, 4);
      head.writeUInt16LE(20, 6);
      head.writeUInt16LE(16, 8);
    }
    const segs = this.slices;
    this.emit(headLen, segs, this.bytes);
    this.slices = 0;
  }
}

const tcpSeq = (b: Uint8Array, o: number): number => ((b[o + 24]! << 24) | (b[o + 25]! << 16) | (b[o + 26]! << 8) | b[o + 27]!) >>> 0;
