/** What a failed kernel change means, from the errno (netlink) or, for tools, from errno-like text. */
export type ErrorKind = 'exists' | 'missing' | 'busy' | 'invalid' | 'permission' | 'unsupported' | 'other';

/** Which failures an op treats as "already as wanted". */
export type Tolerate = 'exists' | 'missing';

const ERRNO_KIND: Record<number, ErrorKind> = {
  1: 'permission', // EPERM
  2: 'missing', // ENOENT
  3: 'missing', // ESRCH: route delete without a match
  13: 'permission', // EACCES
  16: 'busy', // EBUSY
  17: 'exists', // EEXIST
  19: 'missing', // ENODEV
  22: 'invalid', // EINVAL
  34: 'invalid', // ERANGE
  95: 'unsupported', // EOPNOTSUPP
  97: 'unsupported', // EAFNOSUPPORT
  99: 'missing', // EADDRNOTAVAIL: address delete without a match
};

export const errnoKind = (errno: number): ErrorKind => ERRNO_KIND[errno] ?? 'other';

/** A kernel change or read that failed. `op` is the failed op rendered as a command (dry-run text). */
export class KernelError extends Error {
  override name = 'KernelError';

  constructor(
    message: string,
    readonly kind: ErrorKind,
    readonly op?: string,
    readonly errno?: number,
    /** What the tool printed on stderr (iproute2/nft fallback only). */
    readonly detail = '',
  ) {
    super(message);
  }
}

export const tolerated = (tolerate: Tolerate | undefined, e: unknown): boolean => e instanceof KernelError && tolerate !== undefined && e.kind === tolerate;
