import { isStoreUnavailable } from './store.js';

/**
 * Whether a store error may pass if asked again: etcd unreachable, or a request past its deadline (a
 * busy etcd: at 100 nodes every pod write fans out to 100 watchers; EtcdStore reports both as
 * `unavailable`). Anything else is a real answer.
 */
export const transient = isStoreUnavailable;

/**
 * Runs `fn`, again after a transient failure, waiting `firstMs`, then twice as long each time, at
 * most `attempts` times in all; the last failure (or the first that is not transient) is thrown,
 * with how many attempts it took. Only for idempotent work (a compare-and-swap loop, a declarative
 * apply): a write past its deadline may have happened.
 */
export async function retrying<T>(
  fn: () => Promise<T>,
  o: { attempts?: number; firstMs?: number; onRetry?: (e: Error, attempt: number) => void } = {},
): Promise<T> {
  const attempts = o.attempts ?? 4;
  let wait = o.firstMs ?? 500;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!transient(e) || attempt >= attempts) {
        if (attempt > 1 && e instanceof Error) e.message = `${e.message} (after ${attempt} attempts)`;
        throw e;
      }
      o.onRetry?.(e as Error, attempt);
      await new Promise((r) => setTimeout(r, wait));
      wait *= 2;
    }
  }
}
