import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitFor } from './wait.js';

describe('waitFor', () => {
  it('resolves with the first value that is not undefined, null or false', async () => {
    const seen: unknown[] = [undefined, null, false, 0];
    let i = 0;
    const v = await waitFor(() => seen[i++] as number | undefined | null | false, { timeoutMs: 5000, intervalMs: 1, what: 'x' });
    assert.equal(v, 0, '0 is a value');
    assert.equal(i, 4);
  });

  it('awaits async checks and treats a throw as not yet', async () => {
    let n = 0;
    const v = await waitFor(() => (++n < 3 ? Promise.reject(new Error('not ready')) : Promise.resolve('ok')), { timeoutMs: 5000, intervalMs: 1, what: 'x' });
    assert.equal(v, 'ok');
  });

  it('times out saying what it waited for and the last error', async () => {
    await assert.rejects(
      waitFor(
        () => {
          throw new Error('connection refused');
        },
        { timeoutMs: 30, intervalMs: 5, what: 'etcd' },
      ),
      { message: 'timed out after 30 ms waiting for etcd (last error: connection refused)' },
    );
    await assert.rejects(
      waitFor(() => false, { timeoutMs: 0, what: 'a route' }),
      { message: 'timed out after 0 ms waiting for a route' },
    );
  });

  it('checks once more at the deadline', async () => {
    const at: number[] = [];
    const start = Date.now();
    await assert.rejects(waitFor(() => (at.push(Date.now() - start), false), { timeoutMs: 20, intervalMs: 1000, what: 'x' }));
    assert.ok(at.length >= 2, 'a check at the start and one at the deadline');
    assert.ok(at.at(-1)! >= 20, `the last check ran at the deadline, not before (checks at ${at.join(', ')} ms)`);
  });
});
