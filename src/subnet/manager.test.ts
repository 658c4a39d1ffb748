import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { MemoryStore } from '../store/memory.js';
import { waitFor } from '../util/wait.js';
import type { Listing, Store } from '../store/store.js';
import { parseNetworkConfig } from './config.js';
import { encodeLeaseAttrs, LeaseError, subnetKey, type LeaseAttrs } from './lease.js';
import { LeaseManager, type LeaseEvent, type LeaseManagerOptions } from './manager.js';

const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const oneSubnet = parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetMin":"10.244.7.0","SubnetMax":"10.244.7.0"}');
const attrs = (n: number): LeaseAttrs => ({
  publicIP: `198.18.0.${n}`,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` },
});

const until = (what: string, check: () => boolean, timeoutMs = 5000) => waitFor(check, { timeoutMs, intervalMs: 10, what });

const managers: LeaseManager[] = [];
afterEach(async () => {
  for (const m of managers.splice(0)) await m.stop();
});

function manager(options: Partial<LeaseManagerOptions> & { store: Store; attrs: LeaseAttrs }) {
  const m = new LeaseManager({ config, ...options });
  managers.push(m);
  const events: LeaseEvent[] = [];
  m.on((e) => events.push(e));
  const of = <T extends LeaseEvent['type']>(type: T) => events.filter((e): e is Extract<LeaseEvent, { type: T }> => e.type === type);
  return { m, events, of };
}

const subnets = (events: { lease: { subnet: Parameters<typeof formatNetwork>[0] } }[]) => events.map((e) => formatNetwork(e.lease.subnet)).sort();

describe('LeaseManager races (in-memory store)', () => {
  it('two managers racing for the only subnet: exactly one wins, the other is told it is out of subnets', async () => {
    for (const delay of [0, 1]) {
      const store = new MemoryStore();
      store.setDelay(delay);
      const a = manager({ store, config: oneSubnet, attrs: attrs(11) });
      const b = manager({ store, config: oneSubnet, attrs: attrs(12) });
      const results = await Promise.allSettled([a.m.acquire(), b.m.acquire()]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, `delay ${delay}`);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
      assert.ok(lost.reason instanceof LeaseError && lost.reason.code === 'out-of-subnets', String(lost.reason));
      const winner = results[0]?.status === 'fulfilled' ? 11 : 12;
      assert.equal((await store.get('subnets/10.244.7.0-24'))?.value, encodeLeaseAttrs(attrs(winner)));
    }
  });

  it('managers that all prefer the same subnet get distinct ones, one of them the preferred', async () => {
    const store = new MemoryStore();
    store.setDelay(1);
    const all = Array.from({ length: 8 }, (_, i) => manager({ store, attrs: attrs(20 + i), previousSubnet: parseCidr('10.244.5.1/24') }));
    const leases = await Promise.all(all.map((x) => x.m.acquire()));
    const got = leases.map((l) => formatNetwork(l.subnet));
    assert.equal(new Set(got).size, 8);
    assert.equal(got.filter((s) => s === '10.244.5.0/24').length, 1);
  });

  it('replaces its own lease that no longer fits the config only if it is unchanged (compare-and-delete)', async () => {
    const store = new MemoryStore();
    await store.put('subnets/10.244.0.0-24', encodeLeaseAttrs(attrs(11)));
    const lease = await manager({ store, attrs: attrs(11) }).m.acquire();
    assert.notEqual(formatNetwork(lease.subnet), '10.244.0.0/24');
    assert.deepEqual(
      (await store.list('subnets/')).items.map((kv) => kv.key),
      [subnetKey(lease.subnet)],
    );
  });
});

describe('LeaseManager: the first listing', () => {
  it('is complete when watch() resolves, and not before', async () => {
    const store = new MemoryStore();
    for (const n of [12, 13, 14]) await manager({ store, attrs: attrs(n) }).m.acquire();
    const me = manager({ store, attrs: attrs(11) });
    await me.m.acquire();
    assert.equal(me.m.synced, false);
    let seenAtSync = -1;
    const watching = me.m.watch().then(() => (seenAtSync = me.m.remoteLeases().length));
    assert.equal(me.m.synced, false);
    await watching;
    assert.equal(seenAtSync, 3);
    assert.equal(me.m.synced, true);
  });
});

describe('LeaseManager: its own lease', () => {
  it('keeps renewing through an outage shorter than the TTL, reporting errors meanwhile', async () => {
    const store = new MemoryStore();
    const me = manager({ store, attrs: attrs(11), ttlSeconds: 4, renewMarginSeconds: 3.5 });
    const lease = await me.m.acquire();
    store.setUnavailable(true);
    await until('a failed renewal', () => me.of('error').length > 0);
    store.setUnavailable(false);
    await until('a renewal after the outage', () => me.of('renewed').length > 0);
    assert.equal((await store.get(subnetKey(lease.subnet)))?.value, encodeLeaseAttrs(attrs(11)));
    assert.deepEqual(me.of('lost'), []);
    assert.deepEqual(me.of('reasserted'), []);
  });

  it('writes the same subnet back when it expired during an outage', async () => {
    const store = new MemoryStore();
    const me = manager({ store, attrs: attrs(11), ttlSeconds: 2, renewMarginSeconds: 1.5 });
    const lease = await me.m.acquire();
    await me.m.watch();
    store.setUnavailable(true);
    await until('a failed renewal', () => me.of('error').length > 0);
    store.expire(subnetKey(lease.subnet));
    store.setUnavailable(false);
    await until('the lease written back', () => me.of('reasserted').length === 1);
    assert.equal((await store.get(subnetKey(lease.subnet)))?.value, encodeLeaseAttrs(attrs(11)));
    assert.deepEqual(me.m.ownLease, lease);
  });

  it('writes the same subnet back at once when someone deletes it', async () => {
    const store = new MemoryStore();
    const me = manager({ store, attrs: attrs(11) });
    const lease = await me.m.acquire();
    await me.m.watch();
    await store.delete(subnetKey(lease.subnet));
    await until('the lease written back', () => me.of('reasserted').length === 1);
    assert.equal((await store.get(subnetKey(lease.subnet)))?.value, encodeLeaseAttrs(attrs(11)));
    assert.deepEqual(me.m.ownLease, lease);
    assert.deepEqual(me.of('lost'), []);
    assert.deepEqual(me.of('removed'), []);
  });

  it('reports the lease lost when another node holds it, also when it took it right after a delete', async () => {
    for (const deleteFirst of [false, true]) {
      const store = new MemoryStore();
      const me = manager({ store, attrs: attrs(11) });
      const lease = await me.m.acquire();
      await me.m.watch();
      const key = subnetKey(lease.subnet);
      if (deleteFirst) await store.delete(key);
      await store.put(key, encodeLeaseAttrs(attrs(66)));
      await until('the loss', () => me.of('lost').length === 1);
      assert.equal(me.of('lost')[0]!.reason, 'taken');
      assert.equal(me.m.ownLease, undefined);
      assert.equal((await store.get(key))?.value, encodeLeaseAttrs(attrs(66)), 'the new holder keeps it');
      await until('the new holder to be a remote lease', () => me.m.remoteLeases().some((l) => l.attrs.publicIP === '198.18.0.66'));
      assert.deepEqual(me.of('reasserted'), []);
    }
  });
});

describe('LeaseManager when the store loses its data', () => {
  it('detects the reset, writes its lease back, and keeps remote leases while their nodes write theirs back', async () => {
    const store = new MemoryStore();
    const me = manager({ store, attrs: attrs(11), resetGraceSeconds: 0.5 });
    const peer = manager({ store, attrs: attrs(12) });
    const dead = manager({ store, attrs: attrs(13) });
    const [mine, peers, deads] = [await me.m.acquire(), await peer.m.acquire(), await dead.m.acquire()];
    await dead.m.stop();
    await me.m.watch();
    await peer.m.watch();
    for (let i = 0; i < 5; i++) await store.put('config', `{"n":${i}}`);
    store.reset();
    await until('both live leases back', () => me.of('reasserted').length === 1 && peer.of('reasserted').length === 1);
    assert.equal(me.of('reset').length, 1);
    assert.match(me.of('reset')[0]!.reason, /revision went back from \d+ to 1/);
    assert.equal(me.of('reasserted')[0]!.why, 'reset');
    const items = (await store.list('subnets/')).items.map((kv) => [kv.key, kv.value]);
    assert.deepEqual(
      items.sort(),
      [
        [subnetKey(mine.subnet), encodeLeaseAttrs(attrs(11))],
        [subnetKey(peers.subnet), encodeLeaseAttrs(attrs(12))],
      ].sort(),
    );
    // The dead node's lease stays routed through the grace period, then goes; the peer's never flaps.
    assert.deepEqual(me.of('removed'), []);
    assert.equal(me.m.remoteLeases().length, 2);
    await until('the grace period to end', () => me.of('removed').length === 1);
    assert.deepEqual(subnets(me.of('removed')), [formatNetwork(deads.subnet)]);
    assert.deepEqual(subnets(me.m.remoteLeases().map((lease) => ({ lease }))), [formatNetwork(peers.subnet)]);
    // A node joining now gets a subnet nobody holds.
    const joiner = await manager({ store, attrs: attrs(14) }).m.acquire();
    assert.ok(![mine, peers].some((l) => formatNetwork(l.subnet) === formatNetwork(joiner.subnet)));
    // And the watch follows the new store.
    await store.delete(subnetKey(peers.subnet));
    await until('the peer removed', () => me.of('removed').length === 2);
  });

  it('detects another cluster by its ID even when its revision is higher', async () => {
    const store = new MemoryStore();
    const me = manager({ store, attrs: attrs(11) });
    const lease = await me.m.acquire();
    await me.m.watch();
    store.setUnavailable(true);
    await until('the outage noticed', () => me.of('error').length > 0);
    store.reset({ newCluster: true });
    store.setUnavailable(false);
    for (let i = 0; i < 20; i++) await store.put(`other/${i}`, 'x');
    await until('the lease written back', () => me.of('reasserted').length === 1);
    assert.match(me.of('reset')[0]!.reason, /cluster ID changed/);
    assert.equal((await store.get(subnetKey(lease.subnet)))?.value, encodeLeaseAttrs(attrs(11)));
  });

  it('relists after the history it needs was compacted, and catches up without an error', async () => {
    const store = new MemoryStore();
    const gone = await manager({ store, attrs: attrs(12) }).m.acquire();
    let late = '';
    let hooked = false;
    const racing: Store = Object.assign(Object.create(store) as Store, {
      list: async (prefix: string): Promise<Listing> => {
        const listing = await store.list(prefix);
        if (!hooked && prefix === 'subnets/') {
          hooked = true;
          late = formatNetwork((await manager({ store, attrs: attrs(13) }).m.acquire()).subnet);
          await store.delete(subnetKey(gone.subnet));
          store.compact();
        }
        return listing;
      },
    });
    const me = manager({ store: racing, attrs: attrs(11) });
    await me.m.watch();
    await until('the relist to catch up', () => me.of('removed').length === 1 && me.of('added').length === 2);
    assert.deepEqual(subnets(me.of('added')), [formatNetwork(gone.subnet), late].sort());
    assert.deepEqual(subnets(me.of('removed')), [formatNetwork(gone.subnet)]);
    assert.deepEqual(me.of('error'), []);
    assert.deepEqual(me.of('reset'), []);
  });

  it('after an outage, lists again: leases deleted meanwhile go, the others never flap, and it is not taken for a reset', async () => {
    const store = new MemoryStore();
    const me = manager({ store, attrs: attrs(11) });
    await me.m.acquire();
    const other = await manager({ store, attrs: attrs(12) }).m.acquire();
    const stays = await manager({ store, attrs: attrs(13) }).m.acquire();
    await me.m.watch();
    assert.equal(me.m.remoteLeases().length, 2);
    const added = me.of('added').length;
    store.setUnavailable(true);
    await until('the outage noticed', () => me.of('error').length > 0);
    store.setUnavailable(false);
    await store.delete(subnetKey(other.subnet));
    await until('the deleted lease gone', () => me.m.remoteLeases().length === 1);
    assert.deepEqual(subnets(me.of('removed')), [formatNetwork(other.subnet)], 'only the deleted lease was removed');
    assert.equal(me.of('added').length, added, 'the lease that stayed was not re-added');
    assert.deepEqual(subnets(me.m.remoteLeases().map((lease) => ({ lease }))), [formatNetwork(stays.subnet)]);
    assert.deepEqual(me.of('reset'), []);
    assert.deepEqual(me.of('reasserted'), []);
  });
});
