import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retrying, transient } from './retry.js';
import { StoreError } from './store.js';

describe('retrying', () => {
  it('asks again after unavailable errors (unreachable, past the deadline), then succeeds', async () => {
    const errors = [
      new StoreError('unavailable', 'etcd unreachable'),
      new StoreError('unavailable', 'etcd put x: did not answer within 5000 ms (deadline exceeded)'),
    ];
    let calls = 0;
    const seen: number[] = [];
    const out = await retrying(
      () => {
        const e = errors[calls++];
        return e ? Promise.reject(e) : Promise.resolve('done');
      },
      { firstMs: 1, onRetry: (_, n) => seen.push(n) },
    );
    assert.equal(out, 'done');
    assert.equal(calls, 3);
    assert.deepEqual(seen, [1, 2]);
  });

  it('throws a real answer at once, and the last transient one after the attempts, saying how many', async () => {
    let calls = 0;
    const real = new StoreError('failed', 'etcd txn failed: permission denied');
    await assert.rejects(
      retrying(() => {
        calls++;
        return Promise.reject(real);
      }),
      real,
    );
    assert.equal(calls, 1);
    assert.equal(transient(real), false);
    calls = 0;
    await assert.rejects(
      retrying(
        () => {
          calls++;
          return Promise.reject(new StoreError('unavailable', 'etcd unreachable'));
        },
        { attempts: 3, firstMs: 1 },
      ),
      /etcd unreachable \(after 3 attempts\)/,
    );
    assert.equal(calls, 3);
  });
});
