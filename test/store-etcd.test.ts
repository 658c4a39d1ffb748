import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EtcdStore } from '../src/store/etcd.js';
import { isStoreUnavailable, StoreError, type WatchEvent } from '../src/store/store.js';
import { etcdCompact, etcdGateway, etcdGet, startEtcd, type EtcdServer } from '../src/testing/etcd.js';
import { uniquePrefix, waitFor } from './store-support.js';

async function deadEndpoint(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}

function assertStoreError(code: StoreError['code']) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StoreError, `expected StoreError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

describe('testing/etcd', () => {
  it('starts a server that answers, and stop() kills it and removes its data', async () => {
    const server = await startEtcd();
    try {
      assert.match(server.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(existsSync(server.dataDir));
      const store = new EtcdStore({ endpoints: [server.endpoint], prefix: '/probe' });
      await store.put('k', 'v');
      assert.equal((await store.get('k'))?.value, 'v');
      await store.close();
    } finally {
      await server.stop();
    }
    assert.equal(existsSync(server.dataDir), false);
    assert.throws(() => process.kill(server.pid, 0), { code: 'ESRCH' });
    await server.stop();
  });

  it('reports a server that cannot start, with its log', async () => {
    await assert.rejects(startEtcd({ binary: '/bin/false' }), /etcd exited \(code 1\) before serving/);
  });
});

describe('EtcdStore against a real etcd', () => {
  let server: EtcdServer;
  before(async () => {
    server = await startEtcd();
  });
  after(async () => {
    await server?.stop();
  });

  const open = (prefix: string) => new EtcdStore({ endpoints: [server.endpoint], prefix });

  it('gets, lists, puts and deletes under its prefix only', async () => {
    const prefix = uniquePrefix('crud');
    const store = open(prefix);
    const other = open(`${prefix}-other`);
    try {
      const r1 = await store.put('subnets/b', '2');
      const r2 = await store.put('subnets/a', '1');
      await store.put('config', '{}');
      await other.put('subnets/c', '3');
      assert.ok(r2 > r1);
      assert.deepEqual(await store.get('subnets/a'), { key: 'subnets/a', value: '1', revision: r2 });
      assert.equal(await store.get('subnets/zz'), undefined);
      const listing = await store.list('subnets/');
      assert.deepEqual(
        listing.items.map((kv) => [kv.key, kv.value]),
        [
          ['subnets/a', '1'],
          ['subnets/b', '2'],
        ],
      );
      assert.ok(listing.revision >= r2);
      assert.equal((await etcdGet(server.endpoint, `${prefix}/subnets/a`))?.value, '1');
      assert.equal(await store.delete('subnets/a'), true);
      assert.equal(await store.delete('subnets/a'), false);
      assert.deepEqual(
        (await store.list('subnets/')).items.map((kv) => kv.key),
        ['subnets/b'],
      );
    } finally {
      await store.close();
      await other.close();
    }
  });

  it('createIfAbsent lets exactly one of many concurrent writers win', async () => {
    const prefix = uniquePrefix('race');
    const stores = [open(prefix), open(prefix)];
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % 2]!.createIfAbsent('subnets/10.244.5.0-24', `writer-${i}`, 60)));
      const winners = results.flatMap((r, i) => (r === false ? [] : [i]));
      assert.equal(winners.length, 1);
      assert.equal((await stores[0]!.get('subnets/10.244.5.0-24'))?.value, `writer-${winners[0]}`);
      assert.equal(await stores[1]!.createIfAbsent('subnets/10.244.5.0-24', 'late'), false);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('replaceIfValue writes only over the expected value', async () => {
    const store = open(uniquePrefix('cas'));
    try {
      assert.equal(await store.replaceIfValue('k', 'old', 'new'), false);
      await store.put('k', 'old');
      assert.equal(await store.replaceIfValue('k', 'other', 'new'), false);
      assert.equal((await store.get('k'))?.value, 'old');
      const revision = await store.replaceIfValue('k', 'old', 'new');
      assert.equal((await store.get('k'))?.revision, revision);
      assert.equal((await store.get('k'))?.value, 'new');
    } finally {
      await store.close();
    }
  });

  it('deleteIfValue deletes only the expected value, in one transaction', async () => {
    const store = open(uniquePrefix('cad'));
    try {
      assert.equal(await store.deleteIfValue('k', 'v'), false);
      await store.put('k', 'theirs');
      assert.equal(await store.deleteIfValue('k', 'mine'), false);
      assert.equal((await store.get('k'))?.value, 'theirs');
      await store.put('k', 'mine');
      assert.equal(await store.deleteIfValue('k', 'mine'), true);
      assert.equal(await store.get('k'), undefined);
    } finally {
      await store.close();
    }
  });

  it('names the cluster in every listing', async () => {
    const store = open(uniquePrefix('cluster'));
    try {
      const a = await store.list('');
      assert.match(a.clusterId, /^\d+$/);
      assert.notEqual(a.clusterId, '0');
      assert.equal((await store.list('x')).clusterId, a.clusterId);
    } finally {
      await store.close();
    }
  });

  it('expires keys written with a TTL unless they are written again', async () => {
    const store = open(uniquePrefix('ttl'));
    try {
      assert.notEqual(await store.createIfAbsent('renewed', 'v', 1), false);
      assert.notEqual(await store.createIfAbsent('expires', 'v', 1), false);
      await store.put('forever', 'v');
      // Renew back to back (each renewal far inside the 1 s TTL) until the other key has expired.
      let renewals = 0;
      await waitFor(
        'the key without renewals to expire',
        async () => {
          assert.notEqual(await store.replaceIfValue('renewed', 'v', 'v', 1), false, `renewal ${++renewals}`);
          return (await store.get('expires')) === undefined;
        },
        10_000,
      );
      assert.equal((await store.get('renewed'))?.value, 'v');
      assert.equal((await store.get('forever'))?.value, 'v');
      await waitFor('renewed key to expire once renewals stop', async () => (await store.get('renewed')) === undefined, 30_000);
    } finally {
      await store.close();
    }
  });

  it('renews a key through a keepalive on its lease: no new revision, no watch event; a different value is not renewed', async () => {
    const store = open(uniquePrefix('renew'));
    try {
      const written = await store.createIfAbsent('lease', 'v', 5);
      assert.notEqual(written, false);
      const events: WatchEvent[] = [];
      const watch = await store.watch(
        '',
        Number(written) + 1,
        (e) => events.push(e),
        () => undefined,
      );
      const before = (await store.list('')).revision;
      for (let i = 0; i < 3; i++) assert.equal(await store.renew('lease', 'v', 5), written);
      assert.equal(await store.renew('lease', 'other', 5), false);
      assert.equal(await store.renew('missing', 'v', 5), false);
      assert.equal((await store.list('')).revision, before, 'renewals wrote nothing');
      const { lease } = (await etcdGet(server.endpoint, `${store['prefix']}lease`))!;
      const { TTL } = await etcdGateway<{ TTL: string }>(server.endpoint, '/v3/lease/timetolive', { ID: lease });
      assert.ok(Number(TTL) > 3, `the lease was refreshed (TTL ${TTL})`);
      // A key on a lease of another TTL is rewritten with the TTL asked for.
      assert.ok(Number(await store.renew('lease', 'v', 7)) > Number(written));
      await new Promise((r) => setTimeout(r, 200));
      await watch.stop();
      assert.deepEqual(
        events.map((e) => e.type),
        ['put'],
        'only the rewrite to another TTL reached the watcher',
      );
    } finally {
      await store.close();
    }
  });

  it('rejects a TTL that is not a whole number of seconds', async () => {
    const store = open(uniquePrefix('badttl'));
    try {
      await assert.rejects(store.put('k', 'v', 0.5), assertStoreError('failed'));
      await assert.rejects(store.createIfAbsent('k', 'v', 0), /at least 1/);
    } finally {
      await store.close();
    }
  });

  it('watches puts and deletes from a revision, replaying history, until stopped', async () => {
    const store = open(uniquePrefix('watch'));
    try {
      const start = await store.put('subnets/a', '1');
      await store.put('elsewhere', 'x');
      await store.put('subnets/b', '2');
      const events: WatchEvent[] = [];
      const errors: StoreError[] = [];
      const handle = await store.watch(
        'subnets/',
        start,
        (e) => events.push(e),
        (e) => errors.push(e),
      );
      await store.delete('subnets/a');
      const last = await store.put('subnets/b', '3');
      await waitFor('four events', () => events.length >= 4);
      assert.deepEqual(
        events.map((e) => [e.type, e.key, e.type === 'put' ? e.value : undefined]),
        [
          ['put', 'subnets/a', '1'],
          ['put', 'subnets/b', '2'],
          ['delete', 'subnets/a', undefined],
          ['put', 'subnets/b', '3'],
        ],
      );
      assert.equal(events[0]!.revision, start);
      assert.equal(events[3]!.revision, last);
      assert.ok(events.every((e, i) => i === 0 || e.revision > events[i - 1]!.revision));
      await handle.stop();
      // A second watch, started before the write, sees it: had the first one still run, it would have too.
      const witness: WatchEvent[] = [];
      const second = await store.watch(
        'subnets/',
        last + 1,
        (e) => witness.push(e),
        (e) => errors.push(e),
      );
      await store.put('subnets/c', '4');
      await waitFor('the second watch to see subnets/c', () => witness.some((e) => e.key === 'subnets/c'));
      await second.stop();
      assert.equal(events.length, 4);
      assert.deepEqual(errors, []);
    } finally {
      await store.close();
    }
  });

  it('reports a watch on compacted history as compacted, with the compact revision', async () => {
    const store = open(uniquePrefix('compact'));
    try {
      const old = await store.put('subnets/a', '1');
      const latest = await store.put('subnets/a', '2');
      await etcdCompact(server.endpoint, latest);
      let error: StoreError | undefined;
      const events: WatchEvent[] = [];
      await store
        .watch(
          'subnets/',
          old,
          (e) => events.push(e),
          (e) => (error = e),
        )
        .catch((e: StoreError) => (error = e));
      await waitFor('the compaction error', () => error !== undefined);
      assert.equal(error!.code, 'compacted');
      assert.equal(error!.compactRevision, latest);
      assert.deepEqual(events, []);
    } finally {
      await store.close();
    }
  });

  it('reports an unreachable etcd as unavailable, for calls and watches', async () => {
    const store = new EtcdStore({ endpoints: [await deadEndpoint()], prefix: '/dead', timeoutMs: 1000 });
    try {
      await assert.rejects(store.get('k'), assertStoreError('unavailable'));
      await assert.rejects(store.put('k', 'v', 10), (err) => isStoreUnavailable(err));
      await assert.rejects(
        store.watch(
          '',
          1,
          () => undefined,
          () => undefined,
        ),
        assertStoreError('unavailable'),
      );
    } finally {
      await store.close();
    }
  });

  it('fails over to a live endpoint', async () => {
    const store = new EtcdStore({ endpoints: [await deadEndpoint(), server.endpoint], prefix: uniquePrefix('failover'), timeoutMs: 1000 });
    try {
      for (let i = 0; i < 5; i++) {
        await store.put(`k${i}`, 'v');
        assert.equal((await store.get(`k${i}`))?.value, 'v');
      }
    } finally {
      await store.close();
    }
  });

  it('rejects malformed endpoints with the fix', () => {
    assert.throws(() => new EtcdStore({ endpoints: [], prefix: '/x' }), /at least one client URL/);
    assert.throws(() => new EtcdStore({ endpoints: ['127.0.0.1:2379'], prefix: '/x' }), /http:\/\/HOST:PORT/);
  });
});

describe('EtcdStore when etcd goes away', () => {
  it('ends a running watch with an unavailable error', async () => {
    const server = await startEtcd();
    const store = new EtcdStore({ endpoints: [server.endpoint], prefix: uniquePrefix('gone'), timeoutMs: 1000 });
    try {
      const errors: StoreError[] = [];
      await store.watch(
        '',
        1,
        () => undefined,
        (e) => errors.push(e),
      );
      await server.stop();
      await waitFor('the watch to fail', () => errors.length > 0);
      assert.equal(errors.length, 1);
      assert.equal(errors[0]!.code, 'unavailable');
      await assert.rejects(store.get('k'), assertStoreError('unavailable'));
    } finally {
      await store.close();
      await server.stop();
    }
  });
});

describe('EtcdStore over TLS with client certificates', () => {
  let dir: string;
  let server: EtcdServer;
  const file = (name: string) => join(dir, name);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-etcd-tls-'));
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    const key = (name: string) => openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', name);
    key('ca.key');
    openssl('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=weft-test-ca', '-days', '1', '-out', 'ca.crt');
    const issue = (name: string, ext: string) => {
      key(`${name}.key`);
      writeFileSync(file(`${name}.ext`), ext);
      openssl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
        '-out',
        `${name}.crt`,
      );
    };
    // etcd's JSON gateway calls its own gRPC server with the server certificate as its client
    // certificate, so under --client-cert-auth that certificate must allow client auth too (as
    // kubeadm's etcd server certificates do).
    issue('server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
    issue('client', 'extendedKeyUsage=clientAuth\n');
    server = await startEtcd({ tls: { certFile: file('server.crt'), keyFile: file('server.key'), caFile: file('ca.crt') } });
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('talks to etcd with the CA and a client certificate', async () => {
    assert.match(server.endpoint, /^https:/);
    const store = new EtcdStore({
      endpoints: [server.endpoint],
      prefix: uniquePrefix('tls'),
      tls: { caFile: file('ca.crt'), certFile: file('client.crt'), keyFile: file('client.key') },
    });
    try {
      await store.put('k', 'v');
      assert.equal((await store.get('k'))?.value, 'v');
    } finally {
      await store.close();
    }
  });

  it('is refused without a client certificate', async () => {
    const store = new EtcdStore({ endpoints: [server.endpoint], prefix: '/tls', tls: { caFile: file('ca.crt') }, timeoutMs: 2000 });
    try {
      await assert.rejects(store.get('k'), StoreError);
    } finally {
      await store.close();
    }
  });

  it('explains bad TLS settings', () => {
    assert.throws(() => new EtcdStore({ endpoints: ['http://127.0.0.1:1'], prefix: '/x', tls: { caFile: file('ca.crt') } }), /use https:\/\//);
    assert.throws(
      () => new EtcdStore({ endpoints: [server.endpoint], prefix: '/x', tls: { caFile: file('ca.crt'), certFile: file('client.crt') } }),
      /both certFile and keyFile/,
    );
    assert.throws(() => new EtcdStore({ endpoints: [server.endpoint], prefix: '/x', tls: { caFile: file('missing.crt') } }), /cannot read etcd TLS caFile/);
  });
});
