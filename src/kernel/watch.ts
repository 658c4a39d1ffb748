import { KernelError } from './errors.js';
import { errno as lastErrno, libc, strerror } from './libc.js';
import { inNamespace } from './socket.js';
import type { Netns } from './exec.js';

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const NETLINK_ROUTE = 0;
const RTMGRP_LINK = 0x1;
const RTMGRP_NEIGH = 0x4;
const RTMGRP_IPV4_IFADDR = 0x10;
const RTMGRP_IPV4_ROUTE = 0x40;
const EAGAIN = 11;
const EINTR = 4;
const ENOBUFS = 105;

/** One notification: its rtnetlink message type and the whole message (header at 0, payload at 16). */
export type Notification = (type: number, msg: Buffer) => boolean;

/**
 * A socket subscribed to a namespace's link, IPv4 address, IPv4 route and neighbour (and fdb)
 * notifications, read only when asked: `changed` drains what arrived since the last call. The
 * kernel notifies every change to these, whoever makes it; when notifications come faster than
 * the socket's buffer holds, it drops them and the next read says ENOBUFS, which counts as a change.
 */
export class RtnlChanges {
  private readonly buf = Buffer.allocUnsafe(1 << 16);
  private closed = false;

  private constructor(private readonly fd: number) {}

  static open(ns: Netns): RtnlChanges {
    const fd = inNamespace(ns, () => {
      // errno is read here, before the return to the home namespace makes calls of its own.
      const s = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
      if (s < 0) throw new KernelError(`netlink socket(): ${strerror(lastErrno())}`, 'other');
      return s;
    });
    const addr = Buffer.alloc(12);
    addr.writeUInt16LE(AF_NETLINK, 0);
    addr.writeUInt32LE(RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE, 8);
    if (libc.bind(fd, addr, addr.length) !== 0) {
      const err = lastErrno();
      libc.close(fd);
      throw new KernelError(`netlink bind (notifications): ${strerror(err)}`, 'other');
    }
    return new RtnlChanges(fd);
  }

  /** Reads every pending notification: true when one of them `counts`, or when some were lost. */
  changed(counts: Notification): boolean {
    if (this.closed) return true;
    let changed = false;
    for (;;) {
      const n = libc.recv(this.fd, this.buf, this.buf.length, 0) as number;
      if (n < 0) {
        const err = lastErrno();
        if (err === EINTR) continue;
        if (err === EAGAIN) return changed;
        // ENOBUFS: the buffer overflowed and notifications were dropped; reading on is fine.
        if (err === ENOBUFS) {
          changed = true;
          continue;
        }
        throw new KernelError(`netlink recv (notifications): ${strerror(err)}`, 'other', undefined, err);
      }
      for (let off = 0; off + 16 <= n;) {
        const len = this.buf.readUInt32LE(off);
        if (len < 16 || off + len > n) break;
        if (!changed && counts(this.buf.readUInt16LE(off + 4), this.buf.subarray(off, off + len))) changed = true;
        off += (len + 3) & ~3;
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }
}
