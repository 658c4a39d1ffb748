import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitFor } from '../util/wait.js';
import { ReconcileScheduler } from './scheduler.js';

describe('ReconcileScheduler', () => {
  it('runs nothing before start, then coalesces requests made in one turn or during a run into one run after it', async () => {
    const runs: string[] = [];
    let release: () => void = () => undefined;
    const s = new ReconcileScheduler(
      async (reason) => {
        runs.push(reason);
        if (reason === 'initial') await new Promise<void>((r) => (release = r));
        return true;
      },
      { resyncMs: 60_000, retryMs: 60_000 },
    );
    s.request('lease added');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(runs, [], 'a request before start (the lease list is incomplete) does nothing');
    s.start('initial');
    s.request('lease added');
    await waitFor(() => runs.length === 1, { timeoutMs: 10_000, what: 'the first run' });
    for (const r of ['lease added', 'lease removed', 'lease added']) s.request(r);
    release();
    await waitFor(() => runs.length === 2, { timeoutMs: 10_000, what: 'the coalesced run' });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(runs, ['initial', 'lease added']);
    await s.stop();
  });

  it('retries a failed run, and runs on the resync period', async () => {
    const runs: string[] = [];
    const s = new ReconcileScheduler(
      (reason) => {
        runs.push(reason);
        return Promise.resolve(runs.length > 1);
      },
      { resyncMs: 30, retryMs: 1 },
    );
    s.start('initial');
    await waitFor(() => runs.includes('retry') && runs.includes('resync'), { timeoutMs: 10_000, what: 'a retry and a resync' });
    assert.equal(runs[0], 'initial');
    assert.equal(runs[1], 'retry');
    await s.stop();
    const after = runs.length;
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(runs.length, after, 'nothing runs after stop');
  });
});
