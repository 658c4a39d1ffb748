import { closeSync, openSync, statSync } from 'node:fs';
import {
  alignTo4,
  cstr,
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSGERR_ATTR_MSG,
  parseAttrs,
  type Writer,
} from './codec.js';
import { errnoKind, KernelError } from './errors.js';
import { errno as lastErrno, libc, strerror } from './libc.js';
import type { Netns } from './exec.js';

/**
 * rtnetlink sockets bound to a network namespace. A netlink socket talks to the namespace it was
 * created in, so for another namespace the calling (main) thread enters it with setns(2) only for
 * as long as it takes to create the socket (or to run `inNamespace`'s synchronous function), and
 * returns at once: no other JS runs meanwhile. The thread's namespace is checked after every return.
 */

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0x80000;
const NETLINK_ROUTE = 0;
const NETLINK_NETFILTER = 12;
const NFNL_MSG_BATCH_BEGIN = 16;
const NFNL_MSG_BATCH_END = 17;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SOL_NETLINK = 270;
const NETLINK_EXT_ACK = 11;
const CLONE_NEWNET = 0x40000000;
const MSG_TRUNC = 0x20;
const EAGAIN = 11;
const EINTR = 4;
const ENOENT = 2;
const RECV_TIMEOUT_S = 30;

export const SELF_NS = '/proc/thread-self/ns/net';

function nsId(): string {
  const s = statSync(SELF_NS);
  return `${s.dev}:${s.ino}`;
}

let homeNs: { fd: number; id: string } | undefined;
/** Set when the thread could not return home: nothing here runs again in this process. */
let poisoned: string | undefined;

function home(): { fd: number; id: string } {
  homeNs ??= { fd: openSync(SELF_NS, 'r'), id: nsId() };
  return homeNs;
}

/** Fails loudly, after one attempt to repair it, when the thread is not in its own namespace. */
export function assertHomeNamespace(): void {
  const { fd, id } = home();
  if (nsId() === id) return;
  const repaired = libc.setns(fd, CLONE_NEWNET) === 0 && nsId() === id;
  const msg = `netlink: the main thread was left in another network namespace (${repaired ? 'switched back' : 'COULD NOT switch back'})`;
  process.stderr.write(`${msg}\n`);
  if (!repaired) poisoned = msg;
  throw new Error(msg);
}

function nsError(ns: string, what: string, err: number): KernelError {
  return new KernelError(`${what} network namespace ${ns}: ${strerror(err)}`, errnoKind(err), undefined, err);
}

/** Runs `fn` (synchronous only) with this thread in `ns`, then returns to the home namespace. */
export function inNamespace<T>(ns: Netns, fn: () => T): T {
  if (poisoned) throw new Error(poisoned);
  if (ns === undefined) return fn();
  const homeFd = home().fd;
  let target: number;
  try {
    target = openSync(ns, 'r');
  } catch (e) {
    const err = (e as NodeJS.ErrnoException).errno;
    throw nsError(ns, 'cannot open', err === undefined ? ENOENT : -err);
  }
  try {
    if (libc.setns(target, CLONE_NEWNET) !== 0) {
      const err = lastErrno();
      assertHomeNamespace();
      throw nsError(ns, 'cannot enter', err);
    }
    return thenHome(homeFd, fn);
  } finally {
    closeSync(target);
  }
}

/**
 * Runs `fn` (synchronous only) with this thread in a new, empty network namespace (unshare(2)), then
 * returns to the home namespace. The new one lives on only if `fn` pins it (netns.ts bind-mounts it).
 */
export function inNewNamespace<T>(fn: () => T): T {
  if (poisoned) throw new Error(poisoned);
  const homeFd = home().fd;
  if (libc.unshare(CLONE_NEWNET) !== 0) {
    const err = lastErrno();
    assertHomeNamespace();
    throw new KernelError(`cannot make a network namespace: ${strerror(err)}`, errnoKind(err), undefined, err);
  }
  return thenHome(homeFd, fn);
}

function thenHome<T>(homeFd: number, fn: () => T): T {
  try {
    return fn();
  } finally {
    if (libc.setns(homeFd, CLONE_NEWNET) !== 0) process.stderr.write(`netlink: setns back failed: ${strerror(lastErrno())}\n`);
    assertHomeNamespace();
  }
}

/** A kernel answer: the replies before the ack (or before NLMSG_DONE of a dump), or an errno. */
export interface Answer {
  errno: number;
  /** The extended ack's message, when the kernel gave one. */
  ext?: string;
  replies: Buffer[];
}

/** One receive buffer for every socket: reads are synchronous and copy out what they keep. */
const RBUF = Buffer.allocUnsafe(1 << 17);

export class Sock {
  private seq = Math.floor(Date.now() / 1000) & 0x7fffffff;
  private readonly rbuf = RBUF;
  private closed = false;

  private constructor(readonly fd: number) {}

  /** A netlink socket in `ns`: NETLINK_ROUTE, or NETLINK_NETFILTER for nftables. */
  static open(ns: Netns, protocol: 'route' | 'netfilter' = 'route'): Sock {
    const fd = inNamespace(ns, () => {
      const s = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol === 'route' ? NETLINK_ROUTE : NETLINK_NETFILTER) as number;
      if (s < 0) throw new KernelError(`netlink socket(): ${strerror(lastErrno())}`, 'other');
      return s;
    });
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    libc.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_S), 0);
    libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
    return new Sock(fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }

  /**
   * Sends one request with NLM_F_ACK and reads its answer. `slow` sends from a worker thread: for
   * requests the kernel answers only after RCU grace periods (deleting a device, ≈15 ms).
   */
  async ask(w: Writer, slow = false): Promise<Answer> {
    if (!slow) return this.askNow(w);
    const seq = ++this.seq;
    const msg = w.finish(seq, NLM_F_ACK);
    const sent = await new Promise<number>((resolve, reject) => {
      libc.send.async(this.fd, msg, msg.length, 0, (err: unknown, res: number) =>
        err ? reject(err instanceof Error ? err : new Error('netlink send failed')) : resolve(res),
      );
    });
    if (sent !== msg.length) throw new KernelError(`netlink send: ${sent < 0 ? strerror(lastErrno()) : `short write ${sent}`}`, 'other');
    return this.read(seq, false);
  }

  /** ask(), synchronously. */
  askNow(w: Writer): Answer {
    const seq = ++this.seq;
    const msg = w.finish(seq, NLM_F_ACK);
    const sent = libc.send(this.fd, msg, msg.length, 0) as number;
    if (sent !== msg.length) throw new KernelError(`netlink send: ${sent < 0 ? strerror(lastErrno()) : `short write ${sent}`}`, 'other');
    return this.read(seq, false);
  }

  /**
   * An nfnetlink batch: `w` between NFNL_MSG_BATCH_BEGIN and _END for `subsys`, sent in one write,
   * and `w`'s answer. The kernel applies the batch as one transaction.
   */
  batch(w: Writer, subsys: number): Answer {
    const marker = (type: number) => {
      const b = Buffer.alloc(20);
      b.writeUInt32LE(20, 0);
      b.writeUInt16LE(type, 4);
      b.writeUInt16LE(1, 6);
      b.writeUInt32LE(++this.seq >>> 0, 8);
      b.writeUInt16BE(subsys, 18);
      return b;
    };
    const begin = marker(NFNL_MSG_BATCH_BEGIN);
    const seq = ++this.seq;
    const msg = w.finish(seq, NLM_F_ACK);
    const all = Buffer.concat([begin, msg, marker(NFNL_MSG_BATCH_END)]);
    const sent = libc.send(this.fd, all, all.length, 0) as number;
    if (sent !== all.length) throw new KernelError(`netlink send: ${sent < 0 ? strerror(lastErrno()) : `short write ${sent}`}`, 'other');
    return this.read(seq, false);
  }

  /** A dump request: every reply message, retried while the kernel says the dump was interrupted. */
  dump(w: Writer): Buffer[] {
    for (let attempt = 0; ; attempt++) {
      const seq = ++this.seq;
      const msg = w.finish(seq, NLM_F_DUMP);
      const sent = libc.send(this.fd, msg, msg.length, 0) as number;
      if (sent !== msg.length) throw new KernelError(`netlink send: ${sent < 0 ? strerror(lastErrno()) : `short write ${sent}`}`, 'other');
      const a = this.read(seq, true);
      if (a.errno !== 0) throw new KernelError(`netlink dump: ${a.ext ?? strerror(a.errno)}`, errnoKind(a.errno), undefined, a.errno);
      const interrupted = a.replies.some((r) => r.readUInt16LE(6) & NLM_F_DUMP_INTR);
      if (!interrupted || attempt >= 5) return a.replies;
    }
  }

  private read(seq: number, dump: boolean): Answer {
    const replies: Buffer[] = [];
    for (;;) {
      const n = libc.recv(this.fd, this.rbuf, this.rbuf.length, MSG_TRUNC) as number;
      if (n < 0) {
        const err = lastErrno();
        if (err === EINTR) continue;
        throw new KernelError(
          err === EAGAIN ? `netlink: no answer from the kernel in ${RECV_TIMEOUT_S} s` : `netlink recv: ${strerror(err)}`,
          'other',
          undefined,
          err,
        );
      }
      if (n > this.rbuf.length) throw new KernelError(`netlink: reply of ${n} bytes truncated`, 'other');
      for (let off = 0; off + 16 <= n;) {
        const len = this.rbuf.readUInt32LE(off);
        if (len < 16 || off + len > n) break;
        const type = this.rbuf.readUInt16LE(off + 4);
        const flags = this.rbuf.readUInt16LE(off + 6);
        if (this.rbuf.readUInt32LE(off + 8) === seq) {
          if (type === NLMSG_ERROR || (dump && type === NLMSG_DONE)) {
            const err = -this.rbuf.readInt32LE(off + 16);
            const a: Answer = { errno: Math.max(err, 0), replies };
            if (err > 0 && flags & NLM_F_ACK_TLVS) {
              const inner = type === NLMSG_DONE ? 4 : flags & NLM_F_CAPPED ? 20 : 4 + this.rbuf.readUInt32LE(off + 16 + 4);
              const m = parseAttrs(this.rbuf, off + 16 + alignTo4(inner), off + len).get(NLMSGERR_ATTR_MSG);
              if (m && cstr(m) !== '') a.ext = cstr(m);
            }
            return a;
          }
          replies.push(Buffer.from(this.rbuf.subarray(off, off + len)));
        }
        off += alignTo4(len);
      }
    }
  }
}
