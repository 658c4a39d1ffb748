import { errnoKind, KernelError } from './errors.js';
import { errno as lastErrno, libc, strerror } from './libc.js';
import { inNamespace } from './socket.js';
import type { Netns } from './exec.js';

/**
 * IPv4 sockets of another network namespace for Node. A socket belongs to the namespace it was created
 * in for its whole life, whatever thread binds, connects or reads it later; only socket(2) needs the
 * thread inside (`inNamespace`: setns there and straight back). Node creates its own sockets' fds
 * lazily, after the call that asked for them returns, so it cannot be used inside that window:
 * these fds are made here, then handed to Node with `{ fd }` (net.Server.listen, net.Socket,
 * dgram.Socket.bind).
 */

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const IPPROTO_ICMP = 1;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;

/**
 * A non-blocking TCP, UDP or ICMP echo socket in `ns`. The ICMP one is a "ping socket" (a datagram
 * socket of protocol ICMP: the kernel sets the echo id and checksum, and delivers only the replies to
 * it); the namespace's net.ipv4.ping_group_range must include this process's group.
 */
export function inetSocket(ns: Netns, type: 'tcp' | 'udp' | 'icmp'): number {
  return inNamespace(ns, () => {
    const fd = libc.socket(AF_INET, (type === 'tcp' ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, type === 'icmp' ? IPPROTO_ICMP : 0) as number;
    if (fd < 0) {
      const err = lastErrno();
      throw new KernelError(`socket(): ${strerror(err)}`, errnoKind(err), undefined, err);
    }
    return fd;
  });
}

/**
 * A socket of `ns` bound to ip:port, for a server. SO_REUSEADDR first, as Node does for its own
 * servers, so that a restarted server gets its port back while old connections sit in TIME_WAIT.
 */
export function boundSocket(ns: Netns, type: 'tcp' | 'udp', ip: string, port: number): number {
  const fd = inetSocket(ns, type);
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  const addr = Buffer.alloc(16);
  addr.writeUInt16LE(AF_INET, 0);
  addr.writeUInt16BE(port, 2);
  ip.split('.').forEach((octet, i) => addr.writeUInt8(Number(octet), 4 + i));
  if (libc.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4) !== 0 || libc.bind(fd, addr, addr.length) !== 0) {
    const err = lastErrno();
    libc.close(fd);
    throw new KernelError(`bind ${type} ${ip}:${port} in ${ns ?? 'this namespace'}: ${strerror(err)}`, errnoKind(err), undefined, err);
  }
  return fd;
}
