import { errno, libc } from '../../kernel/libc.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = 11;

/** flock(2), which host-local takes on its `lock` file; Node has no binding for it. */
const flockFn = libc.flock;

/** Takes the exclusive lock without blocking the event loop: polls with LOCK_NB. */
export async function flockExclusive(fd: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 1; ; wait = Math.min(wait * 2, 20)) {
    if (flockFn(fd, LOCK_EX | LOCK_NB) === 0) return;
    const err = errno();
    if (err !== EWOULDBLOCK) throw new Error(`flock failed with errno ${err}`);
    if (Date.now() > deadline) throw new Error(`lock still held by another process after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, wait));
  }
}

export function funlock(fd: number): void {
  flockFn(fd, LOCK_UN);
}
