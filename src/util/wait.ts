import { inspect } from 'node:util';

type Falsy = undefined | null | false;

/**
 * Polls `check` until it returns something other than undefined, null or false, and resolves with it.
 * A check that throws counts as "not yet"; its last error is quoted when the wait times out with
 * "timed out after N ms waiting for <what>". The check runs at least once, and once more at the deadline.
 */
export async function waitFor<T>(check: () => T | Falsy | Promise<T | Falsy>, opts: { timeoutMs: number; intervalMs?: number; what: string }): Promise<T> {
  const interval = opts.intervalMs ?? 50;
  const deadline = Date.now() + opts.timeoutMs;
  let last: unknown;
  for (;;) {
    const late = Date.now() >= deadline;
    try {
      const v = await check();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (late) {
      const why = last === undefined ? '' : ` (last error: ${last instanceof Error ? last.message : inspect(last)})`;
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${why}`);
    }
    await new Promise((r) => setTimeout(r, Math.max(0, Math.min(interval, deadline - Date.now()))));
  }
}
