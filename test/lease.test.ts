import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { formatNetwork, parseCidr } from '../src/ip/cidr.js';
import { EtcdStore } from '../src/store/etcd.js';
import { isStoreUnavailable, type Store } from '../src/store/store.js';
import type { NetworkConfig } from '../src/subnet/config.js';
import { readSubnetEnv, writeSubnetEnv } from '../src/subnet/env.js';
import { encodeLeaseAttrs, LeaseError, readNetworkConfig, subnetKey, type LeaseAttrs } from '../src/subnet/lease.js';
import { LeaseManager, type LeaseEvent, type LeaseManagerOptions } from '../src/subnet/manager.js';
import { etcdCompact, startEtcd, type EtcdServer } from '../src/testing/etcd.js';
import { uniquePrefix, waitFor } from './store-support.js';

const VXLAN_16 = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';

const vxlan = (publicIP: string, mac = '02:00:00:00:00:01'): LeaseAttrs => ({
  publicIP,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
});

function isLeaseError(code: LeaseError['code']) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof LeaseError, `expected LeaseError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

/** Records a manager's events; `of(type)` filters them. */
function record(manager: LeaseManager) {
  const events: LeaseEvent[] = [];
  manager.on((e) => events.push(e));
  return {
    events,
    of<T extends LeaseEvent['type']>(type: T): Extract<LeaseEvent, { type: T }>[] {
      return events.filter((e): e is Extract<LeaseEvent, { type: T }> => e.type === type);
    },
  };
}

const subnetsOf = (events: { lease: { subnet: Parameters<typeof formatNetwork>[0] } }[]) => events.map((e) => formatNetwork(e.lease.subnet));

describe('LeaseManager against a real etcd', () => {
  let server: EtcdServer;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    server = await startEtcd();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  after(async () => {
    await server?.stop();
  });

  function openStore(prefix: string, endpoint = server.endpoint): Store {
    const store = new EtcdStore({ endpoints: [endpoint], prefix, timeoutMs: 2000 });
    cleanups.push(() => store.close());
    return store;
  }

  async function network(config = VXLAN_16): Promise<{ store: Store; config: NetworkConfig; prefix: string }> {
    const prefix = uniquePrefix('lease');
    const store = openStore(prefix);
    await store.put('config', config);
    return { store, config: await readNetworkConfig(store), prefix };
  }

  function manager(options: LeaseManagerOptions): LeaseManager {
    const m = new LeaseManager(options);
    cleanups.push(() => m.stop());
    return m;
  }

  it('reads the network config, or says how to create it', async () => {
    const store = openStore(uniquePrefix('noconfig'));
    await assert.rejects(readNetworkConfig(store), (err) => isLeaseError('no-network-config')(err) && /etcdctl put/.test((err as Error).message));
    await store.put('config', '{"Network":"10.1.0.0/16","Backend":{"Type":"host-gw"}}');
    const config = await readNetworkConfig(store);
    assert.equal(formatNetwork(config.network), '10.1.0.0/16');
    assert.equal(config.backend.type, 'host-gw');
  });

  it('rejects a renew margin that does not fit in the TTL', async () => {
    const { store, config } = await network();
    assert.throws(
      () => new LeaseManager({ store, config, attrs: vxlan('198.18.0.11'), ttlSeconds: 10, renewMarginSeconds: 10 }),
      isLeaseError('invalid-lease-options'),
    );
    assert.throws(() => new LeaseManager({ store, config, attrs: vxlan('198.18.0.11'), ttlSeconds: 0 }), isLeaseError('invalid-lease-options'));
  });

  it('acquires a free subnet and stores it exactly as flanneld would', async () => {
    const { store, config } = await network();
    const attrs = vxlan('198.18.0.11', 'aa:bb:cc:dd:ee:01');
    const lease = await manager({ store, config, attrs }).acquire();
    assert.equal(lease.subnet.prefix, 24);
    assert.ok(lease.subnet.base >= config.subnetMin.base && lease.subnet.base <= config.subnetMax.base);
    const listing = await store.list('subnets/');
    assert.deepEqual(
      listing.items.map((kv) => [kv.key, kv.value]),
      [[subnetKey(lease.subnet), '{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}']],
    );
  });

  it('never lets two nodes racing for the only subnet both win', async () => {
    for (let round = 0; round < 10; round++) {
      const { store, config, prefix } = await network('{"Network":"10.244.0.0/16","SubnetMin":"10.244.7.0","SubnetMax":"10.244.7.0"}');
      const other = openStore(prefix);
      const a = manager({ store, config, attrs: { publicIP: '198.18.0.11' } });
      const b = manager({ store: other, config, attrs: { publicIP: '198.18.0.12' } });
      const results = await Promise.allSettled([a.acquire(), b.acquire()]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, `round ${round}`);
      assert.ok(isLeaseError('out-of-subnets')(lost[0]!.reason));
      const winner = results[0]?.status === 'fulfilled' ? '198.18.0.11' : '198.18.0.12';
      assert.equal((await store.get('subnets/10.244.7.0-24'))?.value, encodeLeaseAttrs({ publicIP: winner }));
    }
  });

  it('gives nodes that all want the same previous subnet distinct subnets', async () => {
    const { store, config } = await network();
    const wanted = parseCidr('10.244.5.1/24');
    const managers = Array.from({ length: 6 }, (_, i) => manager({ store, config, attrs: vxlan(`198.18.0.${20 + i}`), previousSubnet: wanted }));
    const leases = await Promise.all(managers.map((m) => m.acquire()));
    const subnets = leases.map((l) => formatNetwork(l.subnet));
    assert.equal(new Set(subnets).size, 6);
    assert.equal(subnets.filter((s) => s === '10.244.5.0/24').length, 1);
    assert.equal((await store.list('subnets/')).items.length, 6);
  });

  it('takes back the lease carrying its PublicIP after a restart, with fresh data', async () => {
    const { store, config } = await network();
    const first = manager({ store, config, attrs: vxlan('198.18.0.11', '02:00:00:00:00:aa') });
    const before = await first.acquire();
    await first.stop();
    const restarted = manager({ store, config, attrs: vxlan('198.18.0.11', '02:00:00:00:00:bb'), previousSubnet: parseCidr('10.244.99.1/24') });
    const after = await restarted.acquire();
    assert.equal(formatNetwork(after.subnet), formatNetwork(before.subnet));
    const items = (await store.list('subnets/')).items;
    assert.equal(items.length, 1);
    assert.match(items[0]!.value, /"VtepMAC":"02:00:00:00:00:bb"/);
  });

  it('reuses the subnet named in subnet.env while it is free', async () => {
    const { store, config } = await network();
    const dir = await mkdtemp(join(tmpdir(), 'weft-lease-env-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const envPath = join(dir, 'subnet.env');
    await writeSubnetEnv(envPath, { network: config.network, subnet: parseCidr('10.244.77.0/24'), mtu: 1450, ipMasq: true });
    const previous = (await readSubnetEnv(envPath))!.subnet;

    const node = await manager({ store, config, attrs: vxlan('198.18.0.11'), previousSubnet: previous }).acquire();
    assert.equal(formatNetwork(node.subnet), '10.244.77.0/24');
    const other = await manager({ store, config, attrs: vxlan('198.18.0.12'), previousSubnet: previous }).acquire();
    assert.notEqual(formatNetwork(other.subnet), '10.244.77.0/24');
  });

  it('ignores a previous subnet outside [SubnetMin, SubnetMax]', async () => {
    const { store, config } = await network();
    const lease = await manager({ store, config, attrs: vxlan('198.18.0.11'), previousSubnet: parseCidr('10.244.0.1/24') }).acquire();
    assert.notEqual(formatNetwork(lease.subnet), '10.244.0.0/24');
  });

  it('replaces its own lease when it no longer fits the config', async () => {
    const { store, config } = await network();
    await store.put('subnets/10.244.0.0-24', encodeLeaseAttrs(vxlan('198.18.0.11')));
    const lease = await manager({ store, config, attrs: vxlan('198.18.0.11') }).acquire();
    assert.notEqual(formatNetwork(lease.subnet), '10.244.0.0/24');
    assert.deepEqual(
      (await store.list('subnets/')).items.map((kv) => kv.key),
      [subnetKey(lease.subnet)],
    );
  });

  it('fails clearly when every subnet is leased', async () => {
    const { store, config } = await network('{"Network":"10.9.0.0/22"}');
    const leases = await Promise.all([11, 12, 13].map((n) => manager({ store, config, attrs: { publicIP: `198.18.0.${n}` } }).acquire()));
    assert.deepEqual(leases.map((l) => formatNetwork(l.subnet)).sort(), ['10.9.1.0/24', '10.9.2.0/24', '10.9.3.0/24']);
    await assert.rejects(
      manager({ store, config, attrs: { publicIP: '198.18.0.14' } }).acquire(),
      (err) => isLeaseError('out-of-subnets')(err) && /all 3 \/24 subnets from 10\.9\.1\.0\/24 to 10\.9\.3\.0\/24 are leased/.test((err as Error).message),
    );
  });

  it('renews before the TTL runs out, and the lease expires once renewal stops', async () => {
    const { store, config } = await network();
    const node = manager({ store, config, attrs: vxlan('198.18.0.11'), ttlSeconds: 2, renewMarginSeconds: 1 });
    const nodeLog = record(node);
    const lease = await node.acquire();
    const watcher = manager({ store, config, attrs: vxlan('198.18.0.99') });
    const watchLog = record(watcher);
    await watcher.watch();
    // Three renewals span more than one TTL: each one must have landed before the lease ran out.
    await waitFor('three renewals', () => nodeLog.of('renewed').length >= 3, 10_000);
    assert.ok(await store.get(subnetKey(lease.subnet)), 'lease still there after more than its TTL');
    assert.deepEqual(watchLog.of('removed'), []);
    await node.stop();
    await waitFor('the lease to expire', async () => (await store.get(subnetKey(lease.subnet))) === undefined, 30_000);
    await waitFor('the watcher to see it go', () => watchLog.of('removed').length === 1);
    assert.deepEqual(subnetsOf(watchLog.of('removed')), [formatNetwork(lease.subnet)]);
  });

  it('reports other nodes leases as they come, change and go, but not its own', async () => {
    const { store, config } = await network();
    const a = await manager({ store, config, attrs: vxlan('198.18.0.11', '02:00:00:00:00:0a') }).acquire();
    const self = manager({ store, config, attrs: vxlan('198.18.0.12') });
    const own = await self.acquire();
    const log = record(self);
    await self.watch();
    assert.deepEqual(subnetsOf(log.of('added')), [formatNetwork(a.subnet)]);

    const c = await manager({ store, config, attrs: vxlan('198.18.0.13') }).acquire();
    await waitFor('c to be added', () => log.of('added').length === 2);
    await manager({ store, config, attrs: vxlan('198.18.0.11', '02:00:00:00:00:ff') }).acquire();
    await waitFor("a's new data", () => log.of('added').length === 3);
    assert.deepEqual(log.of('added')[2]!.lease.attrs, vxlan('198.18.0.11', '02:00:00:00:00:ff'));
    await store.delete(subnetKey(c.subnet));
    await waitFor('c to be removed', () => log.of('removed').length === 1);
    assert.deepEqual(subnetsOf(log.of('removed')), [formatNetwork(c.subnet)]);
    assert.deepEqual(
      self.remoteLeases().map((l) => formatNetwork(l.subnet)),
      [formatNetwork(a.subnet)],
    );
    assert.ok(!subnetsOf(log.of('added')).includes(formatNetwork(own.subnet)));
    assert.deepEqual(log.of('lost'), []);
    assert.deepEqual(log.of('error'), []);
  });

  it('relists after the history it needs was compacted, and catches up', async () => {
    const { store, config } = await network();
    const gone = await manager({ store, config, attrs: vxlan('198.18.0.11') }).acquire();
    let late: string | undefined;
    // Between the watcher's first list and its watch, the world moves on and history is compacted.
    let hooked = false;
    const racing: Store = Object.assign(Object.create(store) as Store, {
      list: async (prefix: string) => {
        const listing = await store.list(prefix);
        if (!hooked) {
          hooked = true;
          late = formatNetwork((await manager({ store, config, attrs: vxlan('198.18.0.13') }).acquire()).subnet);
          await store.delete(subnetKey(gone.subnet));
          const { revision } = await store.list('');
          await etcdCompact(server.endpoint, revision);
        }
        return listing;
      },
    });
    const watcher = manager({ store: racing, config, attrs: vxlan('198.18.0.12') });
    const log = record(watcher);
    await watcher.watch();
    await waitFor('the relist to catch up', () => log.of('removed').length === 1 && log.of('added').length === 2);
    assert.deepEqual(subnetsOf(log.of('added')), [formatNetwork(gone.subnet), late]);
    assert.deepEqual(subnetsOf(log.of('removed')), [formatNetwork(gone.subnet)]);
    assert.deepEqual(
      watcher.remoteLeases().map((l) => formatNetwork(l.subnet)),
      [late],
    );
    assert.deepEqual(log.of('error'), []);
  });

  it('writes its own lease back when someone deletes it, and reports it lost when another node takes it', async () => {
    const { store, config } = await network();
    const node = manager({ store, config, attrs: vxlan('198.18.0.11') });
    const log = record(node);
    const first = await node.acquire();
    await node.watch();
    await store.delete(subnetKey(first.subnet));
    await waitFor('the lease written back', () => log.of('reasserted').length === 1);
    assert.equal(log.of('reasserted')[0]!.why, 'deleted');
    assert.equal((await store.get(subnetKey(first.subnet)))?.value, encodeLeaseAttrs(vxlan('198.18.0.11')));
    assert.deepEqual(node.ownLease, first);

    const intruder = encodeLeaseAttrs(vxlan('198.18.0.66'));
    await store.put(subnetKey(first.subnet), intruder);
    await waitFor('the takeover', () => log.of('lost').length === 1);
    assert.equal(log.of('lost')[0]!.reason, 'taken');
    assert.equal(node.ownLease, undefined);
    assert.equal((await store.get(subnetKey(first.subnet)))?.value, intruder, 'the new holder keeps it');
    await waitFor('the intruder to be a remote lease', () => node.remoteLeases().some((l) => l.attrs.publicIP === '198.18.0.66'));
  });

  it('writes a deleted lease back at renewal time even without watching', async () => {
    const { store, config } = await network();
    const node = manager({ store, config, attrs: vxlan('198.18.0.11'), ttlSeconds: 2, renewMarginSeconds: 1 });
    const log = record(node);
    const lease = await node.acquire();
    await store.delete(subnetKey(lease.subnet));
    await waitFor('the renewal to write it back', () => log.of('reasserted').length === 1, 30_000);
    assert.equal((await store.get(subnetKey(lease.subnet)))?.value, encodeLeaseAttrs(vxlan('198.18.0.11')));
    assert.deepEqual(log.of('lost'), []);
  });

  it('surfaces an unreachable etcd so the agent can retry', async () => {
    const doomed = await startEtcd();
    cleanups.push(() => doomed.stop());
    const store = openStore(uniquePrefix('doomed'), doomed.endpoint);
    await store.put('config', VXLAN_16);
    const config = await readNetworkConfig(store);
    const node = manager({ store, config, attrs: vxlan('198.18.0.11') });
    const log = record(node);
    await node.acquire();
    await node.watch();
    await doomed.stop();
    await waitFor('an error event', () => log.of('error').length > 0);
    assert.ok(isStoreUnavailable(log.of('error')[0]!.error), String(log.of('error')[0]!.error));
    await assert.rejects(manager({ store, config, attrs: vxlan('198.18.0.12') }).acquire(), (err) => isStoreUnavailable(err));
  });
});
