/**
 * libc for the udp backend's data path, through koffi (prebuilt; nothing compiles at install).
 *
 * Why this is not in kernel/: kernel/ is the door for *configuration* (the flannel0 device, its
 * address, MTU and route are Plan ops, see udp.ts and reconcile.ts). Attaching to the TUN device
 * (TUNSETIFF on /dev/net/tun) and owning a UDP socket are how the agent itself carries packets,
 * like any userspace tunnel; they change no kernel state that outlives the agent (flannel0 is made
 * persistent by the Plan, so closing the fd leaves it in place).
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { address, errno, libc, strerror } from '../kernel/libc.js';

/** Thread calls kernel/libc.ts does not bind (only the packet loop's workers use them). */
const threadLib = koffi.load('libc.so.6');
const gettidFn = threadLib.func('int gettid()') as () => number;
const setpriorityFn = threadLib.func('int setpriority(int which, unsigned int who, int prio)') as (which: number, who: number, prio: number) => number;
const PRIO_PROCESS = 0;

/**
 * Gives the calling thread (Linux: PRIO_PROCESS with a thread id sets that one thread) the nice
 * value `nice`. The packet loop's workers do what the kernel's softirq does for vxlan, and softirq
 * work is not queued behind the node's ordinary processes; a worker at nice 0 is (on a busy node it
 * waited on the run queue 40% of the time while iperf3 ran). Returns false when not allowed.
 */
export function setThreadNice(nice: number): boolean {
  return setpriorityFn(PRIO_PROCESS, gettidFn(), nice) === 0;
}

/**
 * The libc calls of the data path with their C signatures (koffi's own are untyped). Each `long` one
 * returns a byte count of at most 128 KiB or -1, which koffi gives as a number.
 */
interface DataPathLibc {
  read: (fd: number, buf: Buffer, n: number) => number;
  write: (fd: number, buf: Buffer, n: number) => number;
  sendto: (fd: number, buf: Buffer, n: number, flags: number, addr: Buffer, addrlen: number) => number;
  poll: (fds: Buffer, nfds: number, timeout: number) => number;
  recvmsg: (fd: number, msg: Buffer, flags: number) => number;
  sendmsg: (fd: number, msg: Buffer, flags: number) => number;
  writev: (fd: number, iov: Buffer, iovcnt: number) => number;
  socket: (domain: number, type: number, protocol: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  setsockopt: (fd: number, level: number, name: number, val: Buffer, len: number) => number;
  ioctl: (fd: number, req: number, arg: Buffer) => number;
  ioctlInt: (fd: number, req: number, arg: number) => number;
  fcntl: (fd: number, cmd: number, arg: number) => number;
  close: (fd: number) => number;
}
const sys: DataPathLibc = libc;

export const { read: readFn, write: writeFn, sendto: sendtoFn, poll: pollFn } = sys;
const {
  recvmsg: recvmsgFn,
  sendmsg: sendmsgFn,
  writev: writevFn,
  socket: socketFn,
  bind: bindFn,
  setsockopt: setsockoptFn,
  ioctl: ioctlFn,
  ioctlInt: ioctlIntFn,
  fcntl: fcntlFn,
  close: closeFn,
} = sys;

export { errno, strerror };

export const EINTR = 4;
export const EAGAIN = 11;
export const EBADFD = 77;
export const EIO = 5;
export const POLLIN = 1;

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_SNDBUF = 7;
const SO_RCVBUFFORCE = 33;
const SO_SNDBUFFORCE = 32;
const IPPROTO_IP = 0;
const IP_MTU_DISCOVER = 10;
const IP_PMTUDISC_DONT = 0;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const TUNSETIFF = 0x400454ca;
const TUNSETOFFLOAD = 0x400454d0;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const UDP_GRO = 104;
/** struct virtio_net_hdr, in front of every packet on a TUN fd opened with IFF_VNET_HDR. */
export const VNET_HDR_LEN = 10;

export class SysError extends Error {
  constructor(
    what: string,
    readonly errno: number,
  ) {
    super(`${what}: ${strerror(errno)}`);
  }
}

/** struct sockaddr_in for ip:port. */
export function sockaddr(ip: number, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.writeUInt32BE(ip >>> 0, 4);
  return b;
}

/**
 * Attaches to the TUN device `name` (IFF_TUN | IFF_NO_PI: raw IP packets, no header) and returns a
 * non-blocking fd. The device is expected to exist (made persistent by the Plan); if it does not,
 * the kernel would create a non-persistent one, which is fine too but not what the Plan describes.
 */
export function openTun(name: string, offload = false): number {
  const fd = openSync('/dev/net/tun', 'r+');
  try {
    const ifr = Buffer.alloc(40);
    ifr.write(name, 0, 15, 'ascii');
    ifr.writeUInt16LE(IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0), 16);
    if (ioctlFn(fd, TUNSETIFF, ifr) !== 0) throw new SysError(`TUNSETIFF ${name}`, errno());
    // With offloads the kernel hands over TCP super-packets (up to 64 KiB) with partial checksums;
    // the tx loop segments them (udp-packet.ts) and sends the segments with one UDP GSO send.
    if (offload && ioctlIntFn(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) !== 0) throw new SysError(`TUNSETOFFLOAD ${name}`, errno());
    setNonBlocking(fd);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function setNonBlocking(fd: number): void {
  const flags = fcntlFn(fd, F_GETFL, 0);
  if (flags < 0 || fcntlFn(fd, F_SETFL, flags | O_NONBLOCK) !== 0) throw new SysError('fcntl O_NONBLOCK', errno());
}

/** A non-blocking UDP socket bound to ip:port, fragmenting (not dropping) datagrams above the path MTU. */
export function openUdp(ip: number, port: number, bufferBytes = 4 << 20): number {
  const fd = socketFn(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SysError('socket', errno());
  try {
    const int = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v);
      return b;
    };
    setsockoptFn(fd, IPPROTO_IP, IP_MTU_DISCOVER, int(IP_PMTUDISC_DONT), 4);
    // Room for bursts while a worker is descheduled; FORCE needs CAP_NET_ADMIN, else the capped size.
    for (const [force, plain] of [
      [SO_RCVBUFFORCE, SO_RCVBUF],
      [SO_SNDBUFFORCE, SO_SNDBUF],
    ] as const) {
      if (setsockoptFn(fd, SOL_SOCKET, force, int(bufferBytes), 4) !== 0) setsockoptFn(fd, SOL_SOCKET, plain, int(bufferBytes), 4);
    }
    // UDP GRO: a run of equal-sized datagrams from one sender (a UDP GSO send, or what the NIC's GRO
    // merged) arrives as one read with its segment size in a control message (GroReceiver). Best
    // effort: without it every read returns one datagram.
    setsockoptFn(fd, SOL_UDP, UDP_GRO, int(1), 4);
    const addr = sockaddr(ip, port);
    if (bindFn(fd, addr, 16) !== 0) throw new SysError(`bind UDP ${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}:${port}`, errno());
    return fd;
  } catch (e) {
    closeFn(fd);
    throw e;
  }
}

export function closeFd(fd: number): void {
  closeFn(fd);
}

/** The address of a buffer's first byte, as a number (exact: user-space addresses are < 2^53). */
export const addressOf = (b: Buffer): number => Number(address(b));

/**
 * An array of struct iovec filled in place (pointers as numbers), for sendmsg and writev: the
 * packet loop hands the kernel headers and payload where they lie instead of copying them together.
 */
export class Iovecs {
  readonly buf: Buffer;
  /** The address of entry 0. */
  readonly base: number;
  count = 0;
  private readonly u32: Uint32Array;

  constructor(readonly max: number) {
    const ab = new ArrayBuffer(max * 16);
    this.u32 = new Uint32Array(ab);
    this.buf = Buffer.from(ab);
    this.base = addressOf(this.buf);
  }

  /** Appends {ptr, len}; the caller keeps count < max. */
  push(ptr: number, len: number): void {
    const i = this.count++ * 4;
    const u = this.u32;
    u[i] = ptr >>> 0; // ToUint32 is modular: the low word of any integer below 2^53
    u[i + 1] = Math.floor(ptr / 0x100000000);
    u[i + 2] = len;
    u[i + 3] = 0;
  }

  /** writev(2) of every entry. Returns the bytes written or -1 (errno()). */
  writev(fd: number): number {
    return writevFn(fd, this.buf, this.count);
  }
}

/**
 * sendmsg(2) of a run of iovec entries to one destination, as one datagram or, with a segment size,
 * as UDP GSO (a UDP_SEGMENT control message: the kernel cuts the bytes into datagrams of that size,
 * the last one shorter). The msghdr, destination and control message are built once.
 */
export class UdpSender {
  readonly iov: Iovecs;
  private readonly msg = Buffer.alloc(56);
  private readonly to = sockaddr(0, 0);
  private readonly control = Buffer.alloc(24);

  constructor(maxIov: number) {
    this.iov = new Iovecs(maxIov);
    this.msg.writeBigUInt64LE(address(this.to), 0);
    this.msg.writeUInt32LE(16, 8);
    this.msg.writeBigUInt64LE(address(this.control), 32);
    this.control.writeBigUInt64LE(18n, 0); // CMSG_LEN(sizeof(u16))
    this.control.writeInt32LE(SOL_UDP, 8);
    this.control.writeInt32LE(UDP_SEGMENT, 12);
  }

  destination(ip: number, port: number): void {
    this.to.writeUInt16BE(port, 2);
    this.to.writeUInt32BE(ip >>> 0, 4);
  }

  /** Sends iovec entries [first, end); segment > 0: UDP GSO in datagrams of `segment` bytes. Returns bytes sent or -1. */
  send(fd: number, first: number, end: number, segment: number): number {
    const m = this.msg;
    const at = this.iov.base + first * 16;
    m.writeUInt32LE(at >>> 0, 16);
    m.writeUInt32LE(Math.floor(at / 0x100000000), 20);
    m.writeUInt32LE(end - first, 24);
    m.writeUInt32LE(0, 28);
    this.control.writeUInt16LE(segment, 16);
    m.writeUInt32LE(segment > 0 ? this.control.length : 0, 40);
    return sendmsgFn(fd, m, 0);
  }
}

/**
 * recvmsg(2) into one large buffer with the source address and the UDP_GRO control message: one
 * call returns either one datagram (gsoSize = its length) or, with UDP GRO, several datagrams from
 * one source back to back, each gsoSize bytes but the last, which may be shorter. The msghdr and
 * iovec are built once, pointing at buffers this object keeps alive (Node never moves an
 * ArrayBuffer's memory).
 */
export class GroReceiver {
  /**
   * Two halves of `size` bytes; each read lands in the half the previous one did not, so the bytes
   * of one read stay in place through the next (the receive loop's coalescer points into them).
   */
  readonly data: Buffer;
  /** Where the last read's datagrams start in `data`: 0 or `size`. */
  at: number;
  /** struct sockaddr_in of the last datagram's source. */
  readonly from = Buffer.alloc(16);
  /** The size of each datagram in the last read (all but the last of them). */
  gsoSize = 0;
  private readonly msg = Buffer.alloc(56);
  /** One iovec per half, back to back; the msghdr points at the one the next read uses. */
  private readonly iov = Buffer.alloc(32);
  private readonly iovAt: number;
  private readonly control = Buffer.alloc(64);

  constructor(readonly size = 128 << 10) {
    this.data = Buffer.alloc(2 * size);
    this.at = size;
    const dataAt = address(this.data);
    for (const half of [0, 1]) {
      this.iov.writeBigUInt64LE(dataAt + BigInt(half * size), 16 * half);
      this.iov.writeBigUInt64LE(BigInt(size), 16 * half + 8);
    }
    this.iovAt = addressOf(this.iov);
    this.msg.writeBigUInt64LE(address(this.from), 0);
    this.msg.writeBigUInt64LE(1n, 24);
    this.msg.writeBigUInt64LE(address(this.control), 32);
  }

  /** Where the next read will land in `data`. */
  get next(): number {
    return this.size - this.at;
  }

  /** Returns the bytes received (datagrams back to back in `data` from `at`), or -1 (errno()). */
  recv(fd: number): number {
    const next = this.next;
    const m = this.msg;
    const iov = this.iovAt + (next === 0 ? 0 : 16);
    m.writeUInt32LE(iov >>> 0, 16);
    m.writeUInt32LE(Math.floor(iov / 0x100000000), 20);
    m.writeUInt32LE(16, 8);
    m.writeUInt32LE(this.control.length, 40);
    m.writeUInt32LE(0, 44);
    m.writeInt32LE(0, 48);
    const n = recvmsgFn(fd, m, 0);
    if (n < 0) return -1;
    this.at = next;
    this.gsoSize = n;
    const c = this.control;
    const clen = m.readUInt32LE(40);
    for (let o = 0; o + 16 <= clen;) {
      const len = c.readUInt32LE(o); // cmsg_len: a size_t, far below 2^32
      if (len < 16 || o + len > clen) break;
      if (c.readInt32LE(o + 8) === SOL_UDP && c.readInt32LE(o + 12) === UDP_GRO && len >= 20) {
        const g = c.readInt32LE(o + 16);
        if (g > 0 && g < n) this.gsoSize = g;
      }
      o += (len + 7) & ~7;
    }
    return n;
  }
}
