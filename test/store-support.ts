import { randomBytes } from 'node:crypto';

/** A key prefix no other test uses, so tests can share one etcd. */
export function uniquePrefix(name: string): string {
  return `/weft-test/${name}-${randomBytes(4).toString('hex')}`;
}

export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
