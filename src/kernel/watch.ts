import { KernelError } from './errors.js';
import { errno as lastErrno, libc, strerror } from './libc.js';
import { Sock } from './socket.js';
import type { Netns } from './exec.js';

const AF_NETLINK = 16;
const RTMGRP_LINK = 0x1;
const RTMGRP_NEIGH = 0x4;
const RTMGRP_IPV4_IFADDR = 0x10;
const RTMGRP_IPV4_ROUTE = 0x40;
const MSG_DONTWAIT = 0x40;
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

  private constructor(private readonly sock: Sock) {}

  static open(ns: Netns): RtnlChanges {
    const sock = Sock.open(ns);
    const addr = Buffer.alloc(12);
    addr.writeUInt16LE(AF_NETLINK, 0);
    addr.writeUInt32LE(RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE, 8);
    if (libc.bind(sock.fd, addr, addr.length) !== 0) {
      const err = lastErrno();
      sock.close();
      throw new KernelError(`netlink bind (notifications): ${strerror(err)}`, 'other');
    }
    return new RtnlChanges(sock);
  }

  /** Reads every pending notification: true when one of them `counts`, or when some were lost. */
  changed(counts: Notification): boolean {
    if (this.closed) return true;
    let changed = false;
    for (;;) {
      const n = libc.recv(this.sock.fd, this.buf, this.buf.length, MSG_DONTWAIT) as number;
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
    this.sock.close();
  }
}
