import koffi from 'koffi';

/**
 * The one binding to libc (koffi: prebuilt, nothing compiles at install). Every module that needs a
 * system call Node does not offer takes it from here.
 */
const lib = koffi.load('libc.so.6');

export const libc = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, const void *addr, unsigned int len)'),
  setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *val, unsigned int len)'),
  send: lib.func('long send(int fd, const void *buf, unsigned long len, int flags)'),
  sendto: lib.func('long sendto(int fd, const void *buf, unsigned long n, int flags, const void *addr, unsigned int addrlen)'),
  recv: lib.func('long recv(int fd, void *buf, unsigned long len, int flags)'),
  recvmsg: lib.func('long recvmsg(int fd, void *msg, int flags)'),
  sendmsg: lib.func('long sendmsg(int fd, const void *msg, int flags)'),
  read: lib.func('long read(int fd, void *buf, unsigned long n)'),
  write: lib.func('long write(int fd, const void *buf, unsigned long n)'),
  writev: lib.func('long writev(int fd, const void *iov, int iovcnt)'),
  poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  ioctl: lib.func('int ioctl(int fd, unsigned long req, void *arg)'),
  ioctlInt: lib.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']),
  fcntl: lib.func('int fcntl(int fd, int cmd, int arg)'),
  flock: lib.func('int flock(int fd, int op)'),
  setns: lib.func('int setns(int fd, int nstype)'),
  unshare: lib.func('int unshare(int flags)'),
  mount: lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)'),
  close: lib.func('int close(int fd)'),
  strerror: lib.func('const char *strerror(int errnum)'),
};

/** errno of the last libc call on this thread. */
export const errno = (): number => koffi.errno();

export function strerror(err: number): string {
  return (libc.strerror(err) as string | null) ?? `errno ${err}`;
}

/** The address of a buffer, for structures that point at other buffers (msghdr, iovec). */
export const address = (b: Buffer): bigint => koffi.address(b);
