import { randomBytes } from 'node:crypto';
import { waitFor as poll } from '../src/util/wait.js';

/** A key prefix no other test uses, so tests can share one etcd. */
export function uniquePrefix(name: string): string {
  return `/weft-test/${name}-${randomBytes(4).toString('hex')}`;
}

/** util/wait's waitFor for the store tests' yes/no checks. */
export const waitFor = (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<true> =>
  poll(async () => (await check()) || undefined, { timeoutMs, what });
