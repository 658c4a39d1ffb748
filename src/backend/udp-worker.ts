/**
 * One direction of the udp backend's packet loop, run in a worker thread (udp-datapath.ts starts
 * two). Both fds are non-blocking: the loop reads until EAGAIN, then waits in poll() with a short
 * timeout, and when idle it wakes four times a second to notice a stop request. The peer table and
 * settings come from shared memory (udp-shared.ts), counters go there.
 *
 *   tx: TUN → UDP. Read a packet from flannel0 (with offload, a TCP super-packet of up to 64 KiB);
 *       find the lease whose subnet holds its destination (longest prefix); none → ICMP net
 *       unreachable back into flannel0; TTL ≤ 1 → drop; else decrement the TTL and send the packet,
 *       as is (a super-packet cut into MSS-sized packets: headers written here, payloads sent from
 *       where they were read, in UDP GSO sends), one packet per datagram, to that lease's
 *       PublicIP:port.
 *   rx: UDP → TUN. Receive with recvmsg on a UDP_GRO socket: one read holds one datagram or a run
 *       of equal-sized datagrams from one source. The source must be a PublicIP holding a lease
 *       (else every datagram of the read is dropped and counted); each datagram must be one IPv4
 *       packet for this node's subnet (else dropped and counted). With offload, consecutive
 *       in-order segments of one TCP flow are merged (TcpCoalescer) and written to flannel0 once
 *       as a GSO packet, as a NIC's GRO would (one writev of the header and the payloads where they
 *       were received); everything else is written one packet at a time.
 */
import { workerData } from 'node:worker_threads';
import {
  completeChecksum,
  decrementTtl,
  dstOf,
  icmpNetUnreachable,
  ipv4Length,
  mayAnswerWithIcmpError,
  MAX_SLICES,
  prefixMask,
  segmentTcp,
  TcpCoalescer,
  UDP_GSO_MAX_BYTES,
  type Segments,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  type PeerTable,
} from './udp-packet.js';
import { C, K, readPeers, type Settings } from './udp-shared.js';
import { Checksummer } from './udp-csum.js';
import {
  addressOf,
  EAGAIN,
  EBADFD,
  EINTR,
  EIO,
  errno,
  GroReceiver,
  Iovecs,
  pollFn,
  readFn,
  sendtoFn,
  setThreadNice,
  sockaddr,
  UdpSender,
  VNET_HDR_LEN,
  writeFn,
} from './udp-sys.js';

export interface WorkerData {
  role: 'tx' | 'rx';
  tunFd: number;
  udpFd: number;
  control: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  /** The TUN fd has IFF_VNET_HDR and TSO offload: a virtio_net_hdr precedes every packet. */
  offload: boolean;
  /** This thread's nice value (0: left as is). */
  nice: number;
}

const POLLIN = 1;
const POLLOUT = 4;
const IDLE_POLL_MS = 250;
const ICMP_PER_SECOND = 200;
const UDP_GSO_MAX_SEGMENTS = 64;
/** Two iovecs (header, payload) per segment: room for a 64 KiB packet cut at an MSS of 64. */
const MAX_IOV = 2048;

const d = workerData as WorkerData;
const ctl = new Int32Array(d.control);
const cnt = new Float64Array(d.counters);
const H = d.offload ? VNET_HDR_LEN : 0;
/** The tx loop's read buffer is the checksum module's memory (sums of its segments run in place). */
const { mem: buf, sum } = new Checksummer();
/** The packet itself, after the virtio header when there is one. */
const pkt = buf.subarray(H);

let version = -1;
let table: PeerTable;
let settings: Settings;
let ownMask = 0;
const addrs = new Map<number, Buffer>();

function refresh(): void {
  const r = readPeers(ctl);
  version = r.version;
  table = r.table;
  settings = r.settings;
  ownMask = prefixMask(settings.ownPrefix);
  addrs.clear();
}

function addrOf(ip: number): Buffer {
  let a = addrs.get(ip);
  if (!a) addrs.set(ip, (a = sockaddr(ip, settings.port)));
  return a;
}

function pollFd(fd: number, events: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32LE(fd, 0);
  b.writeInt16LE(events, 4);
  return b;
}

const stopped = () => Atomics.load(ctl, C.stop) !== 0;
const detach = (): void => {
  Atomics.store(ctl, C.detached, 1);
};

function tx(): void {
  const pin = pollFd(d.tunFd, POLLIN);
  const pout = pollFd(d.udpFd, POLLOUT);
  const icmpBuf = Buffer.alloc(256 + H);
  const icmp = icmpBuf.subarray(H);
  // Segment headers; the payload stays in the read buffer and goes out from there (sendmsg iovecs).
  const hdrs = Buffer.alloc(65536);
  const hdrsAt = addressOf(hdrs);
  const bufAt = addressOf(buf);
  const out = new UdpSender(MAX_IOV);
  const iov = out.iov;
  const seg: Segments = { count: 0, hl: 0, mss: 0, bytes: 0 };
  let gso = d.offload;
  let icmpSecond = 0;
  let icmpSent = 0;
  const retry = (sent: number, again: () => number): boolean => {
    if (sent < 0 && errno() === EAGAIN) {
      // Socket buffer full: wait briefly for room rather than drop at once.
      pollFn(pout, 1, 10);
      sent = again();
    }
    return sent >= 0;
  };
  const send = (b: Buffer, len: number, to: Buffer): boolean => retry(sendtoFn(d.udpFd, b, len, 0, to, 16), () => sendtoFn(d.udpFd, b, len, 0, to, 16));
  const sendIov = (first: number, end: number, segment: number): boolean =>
    retry(out.send(d.udpFd, first, end, segment), () => out.send(d.udpFd, first, end, segment));
  while (!stopped()) {
    const r = readFn(d.tunFd, buf, buf.length);
    const n = r - H;
    if (r <= 0 || n <= 0) {
      const e = r < 0 ? errno() : EAGAIN;
      if (e === EAGAIN) pollFn(pin, 1, IDLE_POLL_MS);
      else if (e === EBADFD || e === EIO) return detach();
      else if (e !== EINTR) pollFn(pin, 1, IDLE_POLL_MS);
      continue;
    }
    if (Atomics.load(ctl, C.version) !== version) refresh();
    // With offload the IP total length of a super-packet may be 0 (> 64 KiB) or stale: trust n.
    const gsoType = H ? buf[1]! & 0x7f : VNET_GSO_NONE;
    const len = gsoType === VNET_GSO_TCPV4 ? (pkt[0]! >> 4 === 4 ? n : 0) : ipv4Length(pkt, n);
    if (len === 0) {
      cnt[K.droppedNonIPv4]!++;
      continue;
    }
    const peer = table.lookup(dstOf(pkt));
    if (peer === undefined) {
      cnt[K.netUnreachable]!++;
      const now = Math.floor(Date.now() / 1000);
      if (now !== icmpSecond) {
        icmpSecond = now;
        icmpSent = 0;
      }
      if (icmpSent < ICMP_PER_SECOND && mayAnswerWithIcmpError(pkt, len)) {
        icmpSent++;
        const m = icmpNetUnreachable(icmp, pkt, len, settings.tunAddr);
        writeFn(d.tunFd, icmpBuf, m + H);
      }
      continue;
    }
    if (!decrementTtl(pkt)) {
      cnt[K.ttlExpired]!++;
      continue;
    }
    if (gsoType === VNET_GSO_TCPV4) {
      // One TSO super-packet from the kernel: cut it into MSS-sized packets as a NIC would.
      segmentTcp(pkt, len, buf.readUInt16LE(4), sum, hdrs, seg);
      const { count, hl, mss } = seg;
      if (count === 0 || 2 * count > MAX_IOV) {
        cnt[K.droppedMalformed]!++;
        continue;
      }
      iov.count = 0;
      const data = bufAt + H + hl;
      const payload = len - hl;
      for (let i = 0; i < count; i++) {
        iov.push(hdrsAt + i * hl, hl);
        iov.push(data + i * mss, Math.min(mss, payload - i * mss));
      }
      out.destination(peer, settings.port);
      const size = hl + mss;
      // One UDP GSO send per ≤ 64 KiB of datagrams (it is one UDP payload before the kernel cuts it).
      const per = gso ? Math.max(1, Math.min(UDP_GSO_MAX_SEGMENTS, Math.floor(UDP_GSO_MAX_BYTES / size))) : 1;
      let ok = true;
      for (let i = 0; i < count && ok; i += per) ok = sendIov(2 * i, 2 * Math.min(i + per, count), per > 1 ? size : 0);
      if (!ok && gso && errno() !== EAGAIN) {
        gso = false; // no UDP GSO here: one datagram per segment from now on
        process.stderr.write(`weft udp: UDP GSO send failed (errno ${errno()}, ${count} x ${size}); sending segment by segment\n`);
      }
      if (!ok) cnt[K.sendErrors]!++;
      else {
        cnt[K.txPackets]! += count;
        cnt[K.txBytes]! += seg.bytes;
      }
      continue;
    }
    if (H && buf[0]! & VNET_F_NEEDS_CSUM && !completeChecksum(pkt, sum, len, buf.readUInt16LE(6), buf.readUInt16LE(8))) {
      cnt[K.droppedMalformed]!++;
      continue;
    }
    if (!send(pkt, len, addrOf(peer))) cnt[K.sendErrors]!++;
    else {
      cnt[K.txPackets]!++;
      cnt[K.txBytes]! += len;
    }
  }
}

function rx(): void {
  const pin = pollFd(d.udpFd, POLLIN);
  const rcv = new GroReceiver();
  const { data } = rcv;
  const dataAt = addressOf(data);
  const iov = new Iovecs(MAX_SLICES + 1);
  let lost = false;
  // With a virtio header on the TUN fd, runs of one TCP flow go to the kernel as one GSO packet;
  // without one, every packet is written as it came (the coalescer's zero header left out).
  const write = (c: TcpCoalescer, headAt: number, headLen: number, packets: number, bytes: number): void => {
    iov.count = 0;
    if (H) iov.push(headAt, headLen);
    for (let i = 0; i < c.slices; i++) iov.push(dataAt + c.sliceAt[i]!, c.sliceLen[i]!);
    if (iov.writev(d.tunFd) < 0) {
      const e = errno();
      cnt[K.tunWriteErrors]! += packets;
      if (e === EBADFD || e === EIO) lost = true;
      return;
    }
    cnt[K.rxPackets]! += packets;
    cnt[K.rxBytes]! += bytes;
  };
  const coalescer = (): TcpCoalescer => {
    const c: TcpCoalescer = new TcpCoalescer((headLen, packets, bytes) => write(c, headAt, headLen, packets, bytes));
    const headAt = addressOf(c.head);
    return c;
  };
  const gro = coalescer();
  const writeOne = coalescer();
  const out = H ? gro : writeOne;
  while (!stopped() && !lost) {
    // A run may go on into the next read, but not into the one after, which overwrites its start.
    if (out.startsIn(rcv.next, rcv.next + rcv.size)) out.flush();
    const n = rcv.recv(d.udpFd);
    if (n < 0) {
      // Nothing more queued: hand over the run being built before waiting.
      out.flush();
      const e = errno();
      if (e !== EINTR) pollFn(pin, 1, IDLE_POLL_MS);
      continue;
    }
    if (Atomics.load(ctl, C.version) !== version) refresh();
    // One read may hold several datagrams (UDP GRO), all from this one source, each `size` bytes but
    // the last; each is checked and counted on its own.
    const size = rcv.gsoSize;
    if (!table.sources.has(rcv.from.readUInt32BE(4))) {
      cnt[K.droppedUnknownSource]! += Math.ceil(n / size);
      continue;
    }
    const at = rcv.at;
    for (let o = at; o < at + n; o += size) {
      const m = Math.min(size, at + n - o);
      const len = ipv4Length(data, m, o);
      if (len === 0) {
        cnt[K.droppedMalformed]!++;
        continue;
      }
      if ((((data[o + 16]! << 24) | (data[o + 17]! << 16) | (data[o + 18]! << 8) | data[o + 19]!) & ownMask) >>> 0 !== settings.ownBase) {
        cnt[K.droppedNotLocal]!++;
        continue;
      }
      if (H) gro.add(data, o, len);
      else {
        writeOne.add(data, o, len);
        writeOne.flush();
      }
    }
  }
  out.flush();
  if (lost) detach();
}

refresh();
if (d.nice !== 0 && !setThreadNice(d.nice)) process.stderr.write(`weft udp: could not set the ${d.role} worker's nice to ${d.nice} (errno ${errno()})\n`);
if (d.role === 'tx') tx();
else rx();
