import { closeSync, openSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import koffi from 'koffi';
import { KernelError, type Netns } from './exec.js';

/**
 * rtnetlink in-process: the subset of iproute2 commands the CNI hot path sends, executed the way
 * `ip -j -batch -` executes them (same messages, same order, same stop at the first failure, same
 * error text), without the ≈3.5 ms exec of `ip`. `supported(op)` says whether an op is in the
 * subset; anything else stays with iproute2.
 *
 * Another namespace is reached by setns(2) on the calling (main) thread only for as long as it takes
 * to create a socket there (a netlink socket talks to the namespace it was created in), all
 * synchronously, so no other JS runs while the thread is elsewhere; the thread's namespace is checked
 * after every switch back. A netns file is also opened for a veth peer's IFLA_NET_NS_FD.
 *
 * Messages go one per round trip, each with NLM_F_ACK and its ack read before the next: the kernel
 * executes every message of a send even after one fails, so batching writes would break the
 * stop-at-first-failure semantics that `tolerate` and rollbacks rely on. Names are resolved to
 * ifindexes by RTM_GETLINK right before the op that needs them, as iproute2 does (no cache).
 */

// ---- libc -------------------------------------------------------------------------------------

const libc = koffi.load('libc.so.6');
const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const setsockoptFn = libc.func('int setsockopt(int fd, int level, int name, const void *val, unsigned int len)');
const sendFn = libc.func('long send(int fd, const void *buf, unsigned long len, int flags)');
const recvFn = libc.func('long recv(int fd, void *buf, unsigned long len, int flags)');
const setnsFn = libc.func('int setns(int fd, int nstype)');
const closeFn = libc.func('int close(int fd)');
const strerrorFn = libc.func('const char *strerror(int errnum)');

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0x80000;
const NETLINK_ROUTE = 0;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SOL_NETLINK = 270;
const NETLINK_EXT_ACK = 11;
const CLONE_NEWNET = 0x40000000;
const MSG_TRUNC = 0x20;

const EAGAIN = 11;
const ENOENT = 2;
const ENODEV = 19;
const EINTR = 4;

const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_REPLACE = 0x100;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const NLM_F_ACK_TLVS = 0x200;
const NLM_F_CAPPED = 0x100;
const NLMSG_ERROR = 2;
const NLMSGERR_ATTR_MSG = 1;

const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const RTM_NEWROUTE = 24;

const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_PACKET = 17;

const IFF_UP = 0x1;
const IFF_RUNNING = 0x40;
const IFF_POINTOPOINT = 0x10;

const IFLA_ADDRESS = 1;
const IFLA_BROADCAST = 2;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINK = 5;
const IFLA_QDISC = 6;
const IFLA_MASTER = 10;
const IFLA_TXQLEN = 13;
const IFLA_OPERSTATE = 16;
const IFLA_LINKMODE = 17;
const IFLA_LINKINFO = 18;
const IFLA_NET_NS_PID = 19;
const IFLA_IFALIAS = 20;
const IFLA_GROUP = 27;
const IFLA_NET_NS_FD = 28;
const IFLA_EXT_MASK = 29;
const IFLA_LINK_NETNSID = 37;
const IFLA_PROTO_DOWN = 39;
const IFLA_PROP_LIST = 52;
const IFLA_ALT_IFNAME = 53;
const IFLA_PERM_ADDRESS = 54;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_INFO_SLAVE_DATA = 5;
const VETH_INFO_PEER = 1;
const IFLA_BRPORT_MODE = 4;
const RTEXT_FILTER_VF = 1;
const RTEXT_FILTER_SKIP_STATS = 8;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RT_SCOPE_HOST = 254;
const RTN_UNICAST = 1;

const RECV_TIMEOUT_S = 30;

// ---- the thread's own namespace ---------------------------------------------------------------

const SELF_NS = '/proc/thread-self/ns/net';

function nsId(): string {
  const s = statSync(SELF_NS);
  return `${s.dev}:${s.ino}`;
}

let homeNs: { fd: number; id: string } | undefined;

/**
 * The namespace this thread is in when netlink is first used, held open to return to. Every call
 * ends back there (asserted), so "first use" and "load" are the same namespace.
 */
function home(): { fd: number; id: string } {
  homeNs ??= { fd: openSync(SELF_NS, 'r'), id: nsId() };
  return homeNs;
}

/** Fails loudly, after one attempt to repair it, when the thread is not in its own namespace. */
export function assertHomeNamespace(): void {
  const { fd, id } = home();
  if (nsId() === id) return;
  const repaired = setnsFn(fd, CLONE_NEWNET) === 0 && nsId() === id;
  const msg = `netlink: the main thread was left in another network namespace (${repaired ? 'switched back' : 'COULD NOT switch back'})`;
  process.stderr.write(`${msg}\n`);
  if (!repaired) poisoned = msg;
  throw new Error(msg);
}

/** Set when the thread could not return home: nothing here runs again in this process. */
let poisoned: string | undefined;

// ---- parsing: the supported subset of iproute2 ------------------------------------------------

type LinkArg =
  | { t: 'mtu'; v: number }
  | { t: 'address'; v: Buffer }
  | { t: 'master'; v: string }
  | { t: 'nomaster' }
  | { t: 'alias'; v: string }
  | { t: 'netns'; v: string };

type Parsed =
  | { kind: 'linkAdd'; name: string; args: LinkArg[]; type: 'bridge' }
  | { kind: 'linkAdd'; name: string; args: LinkArg[]; type: 'veth'; peer?: { name?: string; args: LinkArg[] } }
  | { kind: 'linkSet'; dev: string; args: LinkArg[]; flags: number; change: number; hairpin?: boolean }
  | { kind: 'linkDel'; dev: string }
  | { kind: 'linkShow'; dev: string }
  | { kind: 'addr'; replace: boolean; family: number; local: Buffer; prefix: number; dev: string }
  | { kind: 'route'; family: number; dst?: Buffer; dstLen: number; gw?: Buffer; dev: string };

/** Whether `op` (an iproute2 command without the leading `ip`) is one this executor runs itself. */
export function supported(op: string[]): boolean {
  return parse(op) !== undefined;
}

const validName = (s: string | undefined): s is string =>
  s !== undefined && s !== '' && Buffer.byteLength(s) < 16 && !/[\s/]/.test(s);

function parseMtu(s: string | undefined): number | undefined {
  if (s === undefined || !/^(0|[1-9]\d{0,9})$/.test(s)) return undefined;
  const v = Number(s);
  return v <= 0x7fffffff ? v : undefined;
}

function parseMac(s: string | undefined): Buffer | undefined {
  if (s === undefined || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) return undefined;
  return Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
}

/** An address in network byte order, strictly written (no leading zeros, no zone). */
function parseIp(s: string): { family: number; bytes: Buffer } | undefined {
  if (s.includes('%')) return undefined;
  const v = isIP(s);
  if (v === 4) return { family: AF_INET, bytes: Buffer.from(s.split('.').map(Number)) };
  if (v !== 6) return undefined;
  let body = s;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(body);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    body = `${body.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const words = (t: string) => (t === '' ? [] : t.split(':').map((w) => parseInt(w, 16)));
  const [head, tail] = body.split('::') as [string, string | undefined];
  const left = words(head);
  const right = tail === undefined ? [] : words(tail);
  const all = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return { family: AF_INET6, bytes: out };
}

function parsePrefix(s: string): { family: number; bytes: Buffer; len: number } | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (!ip || !/^(0|[1-9]\d{0,2})$/.test(lenText)) return undefined;
  const len = Number(lenText);
  if (len > (ip.family === AF_INET ? 32 : 128)) return undefined;
  return { ...ip, len };
}

/** The value of an `mtu` or `address` word pair as a LinkArg; undefined when it does not parse. */
function mtuOrAddress(key: 'mtu' | 'address', val: string): LinkArg | undefined {
  if (key === 'mtu') {
    const v = parseMtu(val);
    return v === undefined ? undefined : { t: 'mtu', v };
  }
  const v = parseMac(val);
  return v ? { t: 'address', v } : undefined;
}

/** name/mtu/address/netns pairs of `link add` (and of its veth peer), in any order, each once. */
function linkAddArgs(words: string[], i: number, stop: string, allowNetns: boolean): { args: LinkArg[]; name?: string; next: number } | undefined {
  const args: LinkArg[] = [];
  const seen = new Set<string>();
  let name: string | undefined;
  while (i < words.length && words[i] !== stop) {
    const key = words[i]!;
    const val = words[i + 1];
    if (seen.has(key) || val === undefined) return undefined;
    seen.add(key);
    if (key === 'name') {
      if (!validName(val)) return undefined;
      name = val;
    } else if (key === 'mtu' || key === 'address') {
      const arg = mtuOrAddress(key, val);
      if (!arg) return undefined;
      args.push(arg);
    } else if (key === 'netns' && allowNetns) {
      if (val === '') return undefined;
      args.push({ t: 'netns', v: val });
    } else {
      return undefined;
    }
    i += 2;
  }
  return { args, name, next: i };
}

function parse(op: string[]): Parsed | undefined {
  const [obj, verb] = op;
  if (obj === 'link' && verb === 'add') {
    const top = linkAddArgs(op, 2, 'type', false);
    if (!top || top.name === undefined || op[top.next] !== 'type') return undefined;
    const type = op[top.next + 1];
    const rest = op.slice(top.next + 2);
    if (type === 'bridge' && rest.length === 0) return { kind: 'linkAdd', name: top.name, args: top.args, type: 'bridge' };
    if (type !== 'veth') return undefined;
    if (rest.length === 0) return { kind: 'linkAdd', name: top.name, args: top.args, type: 'veth' };
    if (rest[0] !== 'peer') return undefined;
    const peer = linkAddArgs(rest, 1, '', true);
    if (!peer || peer.next !== rest.length) return undefined;
    return { kind: 'linkAdd', name: top.name, args: top.args, type: 'veth', peer: { name: peer.name, args: peer.args } };
  }
  if (obj === 'link' && verb === 'set') {
    let i = 2;
    if (op[i] === 'dev') i++;
    const dev = op[i++];
    if (!validName(dev)) return undefined;
    const args: LinkArg[] = [];
    const seen = new Set<string>();
    let flags = 0;
    let change = 0;
    while (i < op.length && op[i] !== 'type') {
      const key = op[i]!;
      const slot = key === 'down' ? 'up' : key === 'nomaster' ? 'master' : key;
      if (seen.has(slot)) return undefined;
      seen.add(slot);
      if (key === 'up' || key === 'down') {
        change |= IFF_UP;
        if (key === 'up') flags |= IFF_UP;
        i++;
        continue;
      }
      if (key === 'nomaster') {
        args.push({ t: 'nomaster' });
        i++;
        continue;
      }
      const val = op[i + 1];
      if (val === undefined) return undefined;
      if (key === 'master') {
        if (!validName(val)) return undefined;
        args.push({ t: 'master', v: val });
      } else if (key === 'alias') {
        if (Buffer.byteLength(val) >= 256 || val.includes('\0')) return undefined;
        args.push({ t: 'alias', v: val });
      } else if (key === 'mtu' || key === 'address') {
        const arg = mtuOrAddress(key, val);
        if (!arg) return undefined;
        args.push(arg);
      } else {
        return undefined;
      }
      i += 2;
    }
    let hairpin: boolean | undefined;
    if (i < op.length) {
      const tail = op.slice(i);
      if (tail.length !== 4 || tail[1] !== 'bridge_slave' || tail[2] !== 'hairpin' || (tail[3] !== 'on' && tail[3] !== 'off')) return undefined;
      hairpin = tail[3] === 'on';
    }
    if (args.length === 0 && change === 0 && hairpin === undefined) return undefined;
    return hairpin === undefined ? { kind: 'linkSet', dev, args, flags, change } : { kind: 'linkSet', dev, args, flags, change, hairpin };
  }
  if (obj === 'link' && (verb === 'del' || verb === 'delete' || verb === 'show')) {
    const rest = op.slice(2);
    if (rest[0] === 'dev') rest.shift();
    if (rest.length !== 1 || !validName(rest[0])) return undefined;
    return verb === 'show' ? { kind: 'linkShow', dev: rest[0] } : { kind: 'linkDel', dev: rest[0] };
  }
  if ((obj === 'addr' || obj === 'address') && (verb === 'add' || verb === 'replace')) {
    if (op.length !== 5 || op[3] !== 'dev' || !validName(op[4])) return undefined;
    const p = parsePrefix(op[2]!);
    if (!p) return undefined;
    return { kind: 'addr', replace: verb === 'replace', family: p.family, local: p.bytes, prefix: p.len, dev: op[4] };
  }
  if (obj === 'route' && verb === 'add') {
    const dstText = op[2];
    let i = 3;
    let gwText: string | undefined;
    if (op[i] === 'via') {
      gwText = op[i + 1];
      i += 2;
    }
    if (op[i] !== 'dev' || !validName(op[i + 1]) || i + 2 !== op.length || dstText === undefined) return undefined;
    const gw = gwText === undefined ? undefined : parseIp(gwText);
    if (gwText !== undefined && !gw) return undefined;
    if (dstText === 'default') {
      return { kind: 'route', family: gw?.family ?? AF_INET, dstLen: 0, ...(gw ? { gw: gw.bytes } : {}), dev: op[i + 1]! };
    }
    const dst = parsePrefix(dstText);
    if (!dst || (gw && gw.family !== dst.family)) return undefined;
    return { kind: 'route', family: dst.family, dst: dst.bytes, dstLen: dst.len, ...(gw ? { gw: gw.bytes } : {}), dev: op[i + 1]! };
  }
  return undefined;
}

// ---- messages ---------------------------------------------------------------------------------

const align = (n: number): number => (n + 3) & ~3;

class Writer {
  private buf = Buffer.alloc(1024);
  private off = 16;

  constructor(
    private readonly type: number,
    private readonly flags: number,
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

  ifinfo(family: number, index: number, flags: number, change: number): this {
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

  u8(type: number, v: number): this {
    return this.attr(type, Buffer.from([v]));
  }

  /** A string attribute; iproute2 sends IFLA_IFNAME with its NUL, kinds and aliases without. */
  str(type: number, s: string, nul: boolean): this {
    return this.attr(type, Buffer.from(nul ? `${s}\0` : s));
  }

  nest(type: number): number {
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

  finish(seq: number): Buffer {
    const b = this.buf.subarray(0, this.off);
    b.writeUInt32LE(this.off, 0);
    b.writeUInt16LE(this.type, 4);
    b.writeUInt16LE(this.flags | NLM_F_REQUEST | NLM_F_ACK, 6);
    b.writeUInt32LE(seq >>> 0, 8);
    b.writeUInt32LE(0, 12);
    return b;
  }
}

type Attrs = Map<number, Buffer>;

function parseAttrs(b: Buffer, off: number, end: number): Attrs {
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

/** Every attribute of a nest, in order (a list can repeat a type). */
function nestedList(b: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let off = 0;
  while (off + 4 <= b.length) {
    const len = b.readUInt16LE(off);
    if (len < 4 || off + len > b.length) break;
    out.push([b.readUInt16LE(off + 2) & 0x3fff, b.subarray(off + 4, off + len)]);
    off += align(len);
  }
  return out;
}

const cstr = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul < 0 ? b.length : nul);
};

interface Answer {
  /** 0, or the positive errno the kernel answered. */
  errno: number;
  /** The extended ack's message, when the kernel gave one. */
  ext?: string;
  /** Reply messages (header included) before the ack. */
  replies: Buffer[];
}

function strerror(errno: number): string {
  return strerrorFn(errno) ?? `errno ${errno}`;
}

/** What iproute2 prints for a kernel error: the extended ack's text, else the errno's. */
function kernelText(a: Answer): string {
  if (a.ext) return `Error: ${a.ext}${a.ext.endsWith('.') ? '' : '.'}`;
  return `RTNETLINK answers: ${strerror(a.errno)}`;
}

// ---- sockets ----------------------------------------------------------------------------------

/** Thrown for a failed op; `errno` is the kernel's (or the syscall's) answer when there was one. */
export class NetlinkError extends KernelError {
  constructor(message: string, command: string, stderr: string, line: number | undefined, stdout: string, readonly errno?: number) {
    super(message, command, stderr, line, stdout);
  }
}

/** A failure of the op itself, turned into a NetlinkError by `run` (which knows the line). */
class OpFailure extends Error {
  constructor(
    readonly text: string,
    readonly errno?: number,
  ) {
    super(text);
  }
}

function nsFailure(ns: string, what: string, errno: number): NetlinkError {
  const text = `${what} "${ns}": ${strerror(errno)}`;
  return new NetlinkError(`netlink: ${text}`, `ip netns ${ns}`, `${text}\n`, undefined, '', errno);
}

/** A netlink socket in `ns`, made on this thread with a setns there and back. */
function socketIn(ns: Netns): number {
  if (poisoned) throw new Error(poisoned);
  const homeFd = home().fd;
  let fd = -1;
  if (ns === undefined) {
    fd = socketFn(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) throw new Error(`netlink: socket() failed: ${strerror(koffi.errno())}`);
  } else {
    let target: number;
    try {
      target = openSync(ns, 'r');
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).errno;
      throw nsFailure(ns, 'Cannot open network namespace', errno === undefined ? ENOENT : -errno);
    }
    try {
      if (setnsFn(target, CLONE_NEWNET) !== 0) {
        const errno = koffi.errno();
        assertHomeNamespace();
        throw nsFailure(ns, 'setting the network namespace', errno);
      }
      let errno = 0;
      try {
        fd = socketFn(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0) errno = koffi.errno();
      } finally {
        if (setnsFn(homeFd, CLONE_NEWNET) !== 0) process.stderr.write(`netlink: setns back failed: ${strerror(koffi.errno())}\n`);
        assertHomeNamespace();
      }
      if (fd < 0) throw new Error(`netlink: socket() in ${ns} failed: ${strerror(errno)}`);
    } finally {
      closeSync(target);
    }
  }
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  setsockoptFn(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_S), 0);
  setsockoptFn(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
  return fd;
}

class Sock {
  private seq = Math.floor(Date.now() / 1000) & 0x7fffffff;
  private readonly rbuf = Buffer.alloc(65536);
  private closed = false;

  constructor(readonly fd: number) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFn(this.fd);
  }

  /** Sends one request and reads its replies and ack. `slow` sends from a worker thread. */
  async ask(w: Writer, slow = false): Promise<Answer> {
    const seq = ++this.seq;
    const msg = w.finish(seq);
    let sent: number;
    let errno = 0;
    if (slow) {
      sent = await new Promise<number>((resolve, reject) =>
        sendFn.async(this.fd, msg, msg.length, 0, (err: unknown, res: number) => (err ? reject(err) : resolve(res))),
      );
    } else {
      sent = sendFn(this.fd, msg, msg.length, 0);
      if (sent < 0) errno = koffi.errno();
    }
    if (sent !== msg.length) throw new OpFailure(`netlink send failed: ${sent < 0 ? strerror(errno || 5) : `short write ${sent}`}`, errno || undefined);
    return this.answer(seq);
  }

  private answer(seq: number): Answer {
    const replies: Buffer[] = [];
    for (;;) {
      const n = recvFn(this.fd, this.rbuf, this.rbuf.length, MSG_TRUNC);
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === EINTR) continue;
        throw new OpFailure(errno === EAGAIN ? `netlink: no answer from the kernel in ${RECV_TIMEOUT_S} s` : `netlink recv failed: ${strerror(errno)}`, errno);
      }
      if (n > this.rbuf.length) throw new OpFailure(`netlink: reply of ${n} bytes truncated`);
      for (let off = 0; off + 16 <= n; ) {
        const len = this.rbuf.readUInt32LE(off);
        if (len < 16 || off + len > n) break;
        const type = this.rbuf.readUInt16LE(off + 4);
        const flags = this.rbuf.readUInt16LE(off + 6);
        if (this.rbuf.readUInt32LE(off + 8) === seq) {
          if (type === NLMSG_ERROR) {
            const err = -this.rbuf.readInt32LE(off + 16);
            const a: Answer = { errno: err, replies };
            if (err !== 0 && flags & NLM_F_ACK_TLVS) {
              const inner = flags & NLM_F_CAPPED ? 16 : this.rbuf.readUInt32LE(off + 20);
              const tlv = parseAttrs(this.rbuf, off + 20 + align(inner), off + len);
              const m = tlv.get(NLMSGERR_ATTR_MSG);
              if (m && cstr(m) !== '') a.ext = cstr(m);
            }
            return a;
          }
          replies.push(Buffer.from(this.rbuf.subarray(off, off + len)));
        }
        off += align(len);
      }
    }
  }

  /** RTM_GETLINK by name or index: the reply, or the errno. */
  async getLink(by: string | number): Promise<{ msg?: Buffer; answer: Answer }> {
    const w = new Writer(RTM_GETLINK, 0);
    w.ifinfo(typeof by === 'number' ? AF_UNSPEC : AF_PACKET, typeof by === 'number' ? by : 0, 0, 0);
    if (typeof by === 'string') w.str(IFLA_IFNAME, by, true);
    w.u32(IFLA_EXT_MASK, typeof by === 'string' ? RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS : RTEXT_FILTER_SKIP_STATS);
    const answer = await this.ask(w);
    const msg = answer.errno === 0 ? answer.replies.find((r) => r.readUInt16LE(4) === RTM_NEWLINK) : undefined;
    return { msg, answer };
  }

  /** iproute2's ll_name_to_index: the kernel's answer, else a name of the form ifN. */
  async index(name: string): Promise<number | undefined> {
    const { msg } = await this.getLink(name);
    if (msg) return msg.readInt32LE(16 + 4);
    const m = /^if(\d+)$/.exec(name);
    return m ? Number(m[1]) : undefined;
  }

  async indexOrFail(name: string): Promise<number> {
    const idx = await this.index(name);
    if (idx === undefined) throw new OpFailure(`Cannot find device "${name}"`, ENODEV);
    return idx;
  }
}

// ---- ops --------------------------------------------------------------------------------------

function openPeerNs(v: string): { fd?: number; pid?: number } {
  const path = v.includes('/') ? v : `/run/netns/${v}`;
  try {
    return { fd: openSync(path, 'r') };
  } catch {
    if (/^\d+$/.test(v)) return { pid: Number(v) };
    throw new OpFailure(`Error: argument "${v}" is wrong: Invalid "netns" value`);
  }
}

async function check(sock: Sock, w: Writer, slow = false): Promise<void> {
  const a = await sock.ask(w, slow);
  if (a.errno !== 0) throw new OpFailure(kernelText(a), a.errno);
}

async function linkAdd(sock: Sock, p: Extract<Parsed, { kind: 'linkAdd' }>): Promise<void> {
  const fds: number[] = [];
  try {
    const w = new Writer(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(AF_UNSPEC, 0, 0, 0);
    const put = (args: LinkArg[]) => {
      for (const a of args) {
        if (a.t === 'mtu') w.u32(IFLA_MTU, a.v);
        else if (a.t === 'address') w.attr(IFLA_ADDRESS, a.v);
        else if (a.t === 'netns') {
          const target = openPeerNs(a.v);
          if (target.fd !== undefined) {
            fds.push(target.fd);
            w.u32(IFLA_NET_NS_FD, target.fd);
          } else {
            w.u32(IFLA_NET_NS_PID, target.pid!);
          }
        }
      }
    };
    put(p.args);
    w.str(IFLA_IFNAME, p.name, true);
    const info = w.nest(IFLA_LINKINFO);
    w.str(IFLA_INFO_KIND, p.type, false);
    if (p.type === 'veth' && p.peer) {
      const data = w.nest(IFLA_INFO_DATA);
      const peer = w.nest(VETH_INFO_PEER);
      w.ifinfo(AF_UNSPEC, 0, 0, 0);
      put(p.peer.args);
      if (p.peer.name !== undefined) w.str(IFLA_IFNAME, p.peer.name, true);
      w.end(peer).end(data);
    }
    w.end(info);
    await check(sock, w);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

async function linkSet(sock: Sock, p: Extract<Parsed, { kind: 'linkSet' }>): Promise<void> {
  // iproute2 resolves `master` while parsing, before the device itself.
  const masters = new Map<string, number>();
  for (const a of p.args) {
    if (a.t !== 'master') continue;
    const idx = await sock.index(a.v);
    if (idx === undefined) throw new OpFailure(`Error: argument "${a.v}" is wrong: Device does not exist`, ENODEV);
    masters.set(a.v, idx);
  }
  const index = await sock.indexOrFail(p.dev);
  const w = new Writer(RTM_NEWLINK, 0).ifinfo(AF_UNSPEC, index, p.flags, p.change);
  for (const a of p.args) {
    if (a.t === 'mtu') w.u32(IFLA_MTU, a.v);
    else if (a.t === 'address') w.attr(IFLA_ADDRESS, a.v);
    else if (a.t === 'master') w.u32(IFLA_MASTER, masters.get(a.v)!);
    else if (a.t === 'nomaster') w.u32(IFLA_MASTER, 0);
    else if (a.t === 'alias') w.str(IFLA_IFALIAS, a.v, false);
  }
  if (p.hairpin !== undefined) {
    const info = w.nest(IFLA_LINKINFO);
    w.str(IFLA_INFO_KIND, 'bridge_slave', false);
    const data = w.nest(IFLA_INFO_SLAVE_DATA);
    w.u8(IFLA_BRPORT_MODE, p.hairpin ? 1 : 0);
    w.end(data).end(info);
  }
  await check(sock, w);
}

async function linkDel(sock: Sock, dev: string): Promise<void> {
  const index = await sock.indexOrFail(dev);
  // Deleting a device waits for RCU grace periods (≈15 ms for a veth): sent from a worker thread.
  await check(sock, new Writer(RTM_DELLINK, 0).ifinfo(AF_UNSPEC, index, 0, 0), true);
}

async function addr(sock: Sock, p: Extract<Parsed, { kind: 'addr' }>): Promise<void> {
  const index = await sock.indexOrFail(p.dev);
  const w = new Writer(RTM_NEWADDR, NLM_F_CREATE | (p.replace ? NLM_F_REPLACE : NLM_F_EXCL));
  const hdr = Buffer.alloc(8);
  hdr.writeUInt8(p.family, 0);
  hdr.writeUInt8(p.prefix, 1);
  hdr.writeUInt8(p.family === AF_INET && p.local[0] === 127 ? RT_SCOPE_HOST : RT_SCOPE_UNIVERSE, 3);
  hdr.writeUInt32LE(index, 4);
  w.raw(hdr).attr(IFA_LOCAL, p.local).attr(IFA_ADDRESS, p.local);
  await check(sock, w);
}

async function route(sock: Sock, p: Extract<Parsed, { kind: 'route' }>): Promise<void> {
  const index = await sock.indexOrFail(p.dev);
  const w = new Writer(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  const hdr = Buffer.alloc(12);
  hdr.writeUInt8(p.family, 0);
  hdr.writeUInt8(p.dstLen, 1);
  hdr.writeUInt8(RT_TABLE_MAIN, 4);
  hdr.writeUInt8(RTPROT_BOOT, 5);
  hdr.writeUInt8(p.family === AF_INET && !p.gw ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE, 6);
  hdr.writeUInt8(RTN_UNICAST, 7);
  w.raw(hdr);
  if (p.dst) w.attr(RTA_DST, p.dst);
  if (p.gw) w.attr(RTA_GATEWAY, p.gw);
  w.u32(RTA_OIF, index);
  await check(sock, w);
}

// ---- `link show`, printed as `ip -j` prints it ------------------------------------------------

/** iproute2's JSON string escaping (json_writer.c): these seven, everything else as is. */
function jstr(s: string): string {
  return `"${s.replace(/[\t\n\r\f\b\\"]/g, (c) => ({ '\t': '\\t', '\n': '\\n', '\r': '\\r', '\f': '\\f', '\b': '\\b', '\\': '\\\\', '"': '\\"' })[c]!)}"`;
}

const FLAG_NAMES: [number, string][] = [
  [0x8, 'LOOPBACK'],
  [0x2, 'BROADCAST'],
  [0x10, 'POINTOPOINT'],
  [0x1000, 'MULTICAST'],
  [0x80, 'NOARP'],
  [0x200, 'ALLMULTI'],
  [0x100, 'PROMISC'],
  [0x400, 'MASTER'],
  [0x800, 'SLAVE'],
  [0x4, 'DEBUG'],
  [0x8000, 'DYNAMIC'],
  [0x4000, 'AUTOMEDIA'],
  [0x2000, 'PORTSEL'],
  [0x20, 'NOTRAILERS'],
  [0x1, 'UP'],
  [0x10000, 'LOWER_UP'],
  [0x20000, 'DORMANT'],
  [0x40000, 'ECHO'],
];

const OPER_STATES = ['UNKNOWN', 'NOTPRESENT', 'DOWN', 'LOWERLAYERDOWN', 'TESTING', 'DORMANT', 'UP'];
const LINK_MODES = ['DEFAULT', 'DORMANT'];

const ARPHRD: Record<number, string> = {
  0: 'netrom', 1: 'ether', 2: 'eether', 3: 'ax25', 4: 'pronet', 5: 'chaos', 6: 'ieee802', 7: 'arcnet', 8: 'atalk',
  15: 'dlci', 19: 'atm', 23: 'metricom', 24: 'ieee1394', 32: 'infiniband', 256: 'slip', 257: 'cslip', 258: 'slip6',
  259: 'cslip6', 260: 'rsrvd', 264: 'adapt', 270: 'rose', 271: 'x25', 272: 'hwx25', 280: 'can', 512: 'ppp',
  513: 'hdlc', 516: 'lapb', 517: 'ddcmp', 518: 'rawhdlc', 768: 'ipip', 769: 'tunnel6', 770: 'frad', 771: 'skip',
  772: 'loopback', 773: 'ltalk', 774: 'fddi', 775: 'bif', 776: 'sit', 777: 'ip/ddp', 778: 'gre', 779: 'pimreg',
  780: 'hippi', 781: 'ash', 782: 'econet', 783: 'irda', 784: 'fcpp', 785: 'fcal', 786: 'fcpl', 787: 'fcfb0',
  800: 'tr', 801: 'ieee802.11', 802: 'ieee802.11/prism', 803: 'ieee802.11/radiotap', 804: 'ieee802.15.4',
  805: 'ieee802.15.4/monitor', 820: 'phonet', 821: 'phonet_pipe', 822: 'caif', 823: 'gre6', 824: 'netlink',
  825: '6lowpan', 65534: 'none', 65535: 'void',
};

function v6text(b: Buffer): string {
  const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = words.map((w) => w.toString(16));
  return best < 0 ? hex.join(':') : `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function llAddr(b: Buffer, type: number): string {
  if (b.length === 4 && (type === 768 || type === 776 || type === 778)) return Array.from(b).join('.');
  if (b.length === 16 && (type === 769 || type === 823)) return v6text(b);
  return Array.from(b.length ? b : Buffer.alloc(1), (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The JSON array `ip -j link show dev X` prints for one RTM_NEWLINK (without its newline). */
async function linkJson(sock: Sock, msg: Buffer): Promise<string> {
  const ifiType = msg.readUInt16LE(16 + 2);
  const index = msg.readInt32LE(16 + 4);
  const flags = msg.readUInt32LE(16 + 8);
  const tb = parseAttrs(msg, 32, msg.readUInt32LE(0));
  const f: string[] = [];
  const u32 = (t: number) => tb.get(t)!.readUInt32LE(0);
  const nameOf = async (idx: number): Promise<{ name: string; flags?: number }> => {
    const { msg: m } = await sock.getLink(idx);
    const n = m ? parseAttrs(m, 32, m.readUInt32LE(0)).get(IFLA_IFNAME) : undefined;
    return n && m ? { name: cstr(n), flags: m.readUInt32LE(16 + 8) } : { name: `if${idx}` };
  };

  f.push(`"ifindex":${index}`);
  let mdown = false;
  if (tb.has(IFLA_LINK)) {
    const iflink = tb.get(IFLA_LINK)!.readInt32LE(0);
    if (iflink === 0) f.push('"link":null');
    else if (tb.has(IFLA_LINK_NETNSID)) f.push(`"link_index":${iflink}`);
    else {
      const peer = await nameOf(iflink);
      f.push(`"link":${jstr(peer.name)}`);
      mdown = peer.flags !== undefined && !(peer.flags & IFF_UP);
    }
  }
  f.push(tb.has(IFLA_IFNAME) ? `"ifname":${jstr(cstr(tb.get(IFLA_IFNAME)!))}` : '"ifname":null');

  const fl: string[] = [];
  let rest = flags;
  if (rest & IFF_UP && !(rest & IFF_RUNNING)) fl.push('NO-CARRIER');
  rest &= ~IFF_RUNNING;
  for (const [bit, name] of FLAG_NAMES) {
    if (rest & bit) {
      rest &= ~bit;
      fl.push(name);
    }
  }
  if (rest) fl.push((rest >>> 0).toString(16));
  if (mdown) fl.push('M-DOWN');
  f.push(`"flags":[${fl.map(jstr).join(',')}]`);

  if (tb.has(IFLA_MTU)) f.push(`"mtu":${tb.get(IFLA_MTU)!.readInt32LE(0)}`);
  if (tb.has(IFLA_QDISC)) f.push(`"qdisc":${jstr(cstr(tb.get(IFLA_QDISC)!))}`);
  if (tb.has(IFLA_MASTER)) f.push(`"master":${jstr((await nameOf(u32(IFLA_MASTER))).name)}`);
  if (tb.has(IFLA_OPERSTATE)) {
    const s = tb.get(IFLA_OPERSTATE)![0]!;
    f.push(s < OPER_STATES.length ? `"operstate":${jstr(OPER_STATES[s]!)}` : `"operstate_index":${s}`);
  }
  if (tb.has(IFLA_LINKMODE)) {
    const m = tb.get(IFLA_LINKMODE)![0]!;
    f.push(m < LINK_MODES.length ? `"linkmode":${jstr(LINK_MODES[m]!)}` : `"linkmode_index":${m}`);
  }
  if (tb.has(IFLA_GROUP)) {
    const g = u32(IFLA_GROUP);
    f.push(`"group":${jstr(g === 0 ? 'default' : String(g | 0))}`);
  }
  if (tb.has(IFLA_TXQLEN) && tb.get(IFLA_TXQLEN)!.readInt32LE(0) !== 0) f.push(`"txqlen":${tb.get(IFLA_TXQLEN)!.readInt32LE(0)}`);

  f.push(`"link_type":${jstr(ARPHRD[ifiType] ?? `[${ifiType}]`)}`);
  const address = tb.get(IFLA_ADDRESS);
  if (address) f.push(`"address":${jstr(llAddr(address, ifiType))}`);
  const broadcast = tb.get(IFLA_BROADCAST);
  if (broadcast) {
    if (flags & IFF_POINTOPOINT) f.push('"link_pointtopoint":true');
    f.push(`"broadcast":${jstr(llAddr(broadcast, ifiType))}`);
  }
  const perm = tb.get(IFLA_PERM_ADDRESS);
  if (perm && (!address || !perm.equals(address))) f.push(`"permaddr":${jstr(llAddr(perm, ifiType))}`);
  if (tb.has(IFLA_LINK_NETNSID)) f.push(`"link_netnsid":${tb.get(IFLA_LINK_NETNSID)!.readInt32LE(0)}`);
  if (tb.has(IFLA_PROTO_DOWN) && tb.get(IFLA_PROTO_DOWN)![0]) f.push('"proto_down":true');
  if (tb.has(IFLA_IFALIAS)) f.push(`"ifalias":${jstr(cstr(tb.get(IFLA_IFALIAS)!))}`);
  const props = tb.get(IFLA_PROP_LIST);
  if (props) {
    const alt = nestedList(props).filter(([t]) => t === IFLA_ALT_IFNAME);
    f.push(`"altnames":[${alt.map(([, v]) => jstr(cstr(v))).join(',')}]`);
  }
  return `[{${f.join(',')}}]`;
}

async function linkShow(sock: Sock, dev: string): Promise<string> {
  const { msg, answer } = await sock.getLink(dev);
  if (!msg) {
    if (answer.errno === ENODEV || answer.errno === 0) throw new OpFailure(`Device "${dev}" does not exist.`, ENODEV);
    throw new OpFailure(kernelText(answer), answer.errno);
  }
  return `${await linkJson(sock, msg)}\n`;
}

// ---- sessions ---------------------------------------------------------------------------------

/**
 * Sockets for the namespaces of one apply, each made once and closed by `close()`. `run` takes one
 * namespace's ops at a time; calls on one session must not overlap.
 */
export class NetlinkSession {
  private readonly socks = new Map<string, Sock>();
  private busy = false;

  /**
   * Runs `cmds` (iproute2 commands without `ip`) in `ns` like `ip -j -batch -` would: in order,
   * stopping at the first failure, which is thrown as a NetlinkError (a KernelError) carrying the
   * op's 1-based `line` and what earlier `show` ops printed. Returns what the `show` ops printed.
   */
  async run(ns: Netns, cmds: string[][]): Promise<string> {
    if (this.busy) throw new Error('netlink: NetlinkSession.run calls overlap');
    const parsed = cmds.map((c) => {
      const p = parse(c);
      if (!p) throw new Error(`netlink: unsupported op: ip ${c.join(' ')}`);
      return p;
    });
    this.busy = true;
    try {
      assertHomeNamespace();
      if (parsed.length === 0) return '';
      const key = ns ?? '';
      let sock = this.socks.get(key);
      if (!sock) {
        sock = new Sock(socketIn(ns));
        this.socks.set(key, sock);
      }
      let shown = '';
      for (let i = 0; i < parsed.length; i++) {
        try {
          shown += await exec(sock, parsed[i]!);
        } catch (e) {
          if (!(e instanceof OpFailure)) throw e;
          const command = `ip ${cmds[i]!.join(' ')}`;
          const where = ns === undefined ? '' : ` in ${ns}`;
          throw new NetlinkError(`${command} (netlink${where}, line ${i + 1}): ${e.text}`, command, `${e.text}\nCommand failed -:${i + 1}\n`, i + 1, shown, e.errno);
        }
      }
      return shown;
    } finally {
      this.busy = false;
      assertHomeNamespace();
    }
  }

  close(): void {
    for (const s of this.socks.values()) s.close();
    this.socks.clear();
  }
}

async function exec(sock: Sock, p: Parsed): Promise<string> {
  switch (p.kind) {
    case 'linkAdd':
      await linkAdd(sock, p);
      return '';
    case 'linkSet':
      await linkSet(sock, p);
      return '';
    case 'linkDel':
      await linkDel(sock, p.dev);
      return '';
    case 'linkShow':
      return linkShow(sock, p.dev);
    case 'addr':
      await addr(sock, p);
      return '';
    case 'route':
      await route(sock, p);
      return '';
  }
}

/** One namespace's ops in a session of their own (see NetlinkSession.run). */
export async function applyNetlink(ns: Netns, cmds: string[][]): Promise<string> {
  const session = new NetlinkSession();
  try {
    return await session.run(ns, cmds);
  } finally {
    session.close();
  }
}
