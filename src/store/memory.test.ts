import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitFor } from '../util/wait.js';
import { MemoryStore } from './memory.js';
import { StoreError, type WatchEvent } from './store.js';

const isCode = (code: StoreError['code']) => (err: unknown) => err instanceof StoreError && err.code === code;
const tick = () => new Promise((r) => setImmediate(r));

describe('MemoryStore: etcd semantics', () => {
  it('counts revisions from 1, as etcd; conditional writes and deletes act only on a match', async () => {
    const s = new MemoryStore();
    assert.equal((await s.list('')).revision, 1);
    const r = await s.createIfAbsent('k', 'a');
    assert.equal(r, 2);
    assert.equal(await s.createIfAbsent('k', 'b'), false);
    assert.equal(await s.replaceIfValue('k', 'x', 'b'), false);
    assert.equal(await s.replaceIfValue('k', 'a', 'b'), 3);
    assert.equal(await s.deleteIfValue('k', 'a'), false);
    assert.equal((await s.get('k'))?.value, 'b');
    assert.equal(await s.deleteIfValue('k', 'b'), true);
    assert.equal(await s.get('k'), undefined);
    assert.deepEqual(s.writes, ['put k', 'put k', 'delete k']);
  });

  it('replays history to a watch, then follows; a watch before compacted history ends as compacted', async () => {
    const s = new MemoryStore();
    const from = await s.put('p/a', '1');
    await s.put('q/x', '2');
    await s.delete('p/a');
    const events: WatchEvent[] = [];
    await s.watch(
      'p/',
      from,
      (e) => events.push(e),
      () => undefined,
    );
    await s.put('p/b', '3');
    await tick();
    assert.deepEqual(
      events.map((e) => `${e.type} ${e.key}`),
      ['put p/a', 'delete p/a', 'put p/b'],
    );
    s.compact();
    let error: StoreError | undefined;
    await s.watch(
      'p/',
      from,
      () => assert.fail('no events'),
      (e) => (error = e),
    );
    await tick();
    assert.ok(isCode('compacted')(error));
  });

  it('injects outages (calls fail, watches end), a data reset and a new cluster ID', async () => {
    const s = new MemoryStore();
    await s.put('k', 'v');
    const errors: StoreError[] = [];
    await s.watch(
      '',
      1,
      () => undefined,
      (e) => errors.push(e),
    );
    s.setUnavailable(true);
    assert.ok(isCode('unavailable')(errors[0]));
    await assert.rejects(s.get('k'), isCode('unavailable'));
    s.setUnavailable(false);
    const before = await s.list('');
    s.reset();
    const after = await s.list('');
    assert.deepEqual(after.items, []);
    assert.equal(after.revision, 1);
    assert.equal(after.clusterId, before.clusterId);
    s.reset({ newCluster: true });
    assert.notEqual((await s.list('')).clusterId, before.clusterId);
  });

  it('expires keys written with a TTL', async () => {
    const s = new MemoryStore();
    await s.put('t', 'v', 1);
    await s.put('forever', 'v');
    await waitFor(async () => (await s.get('t')) === undefined, { timeoutMs: 30_000, what: 'the 1 s key to expire' });
    assert.equal((await s.get('forever'))?.value, 'v');
    await assert.rejects(s.put('k', 'v', 0.5), isCode('failed'));
  });
});
