import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../store/memory.js';
import { waitFor } from '../util/wait.js';
import { ClusterIpPicker, clusterIpKey, NodePortPicker, nodePortKey, ServiceCidr } from './alloc.js';
import { RegistryCache, type RegistryEvent } from './cache.js';
import { ManifestError, parseManifests } from './manifest.js';
import { Registry, RegistryError } from './registry.js';

const svc = (name: string, spec: string, ns = 'default') => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec}\n---\n`;
const docs = (text: string) => parseManifests(text, 'test.yaml');

async function rejected(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ManifestError, String(e));
    return e.message;
  }
  assert.fail('expected a ManifestError');
}

const keys = async (store: MemoryStore, prefix = '') => (await store.list(prefix)).items.map((kv) => kv.key);

describe('ServiceCidr and allocation', () => {
  it('never hands out the network or broadcast address; says why an address cannot be used', () => {
    const cidr = new ServiceCidr('10.96.0.0/30');
    assert.equal(cidr.size, 2);
    for (let i = 0; i < 200; i++) assert.ok(['10.96.0.1', '10.96.0.2'].includes(cidr.random()));
    assert.match(cidr.refuse('10.96.0.0')!, /network address/);
    assert.match(cidr.refuse('10.96.0.3')!, /broadcast address/);
    assert.match(cidr.refuse('10.97.0.1')!, /outside the service range 10\.96\.0\.0\/30/);
    assert.equal(cidr.refuse('10.96.0.2'), undefined);
    assert.equal(new ServiceCidr('10.96.5.5/12').text, '10.96.0.0/12');
    assert.throws(() => new ServiceCidr('10.96.0.0/31'), /from \/8 to \/30/);
  });

  it('allocates distinct ClusterIPs until the range is full, then says so', async () => {
    const store = new MemoryStore();
    const cidr = new ServiceCidr('10.96.0.0/29');
    const got = new Set<string>();
    for (let i = 0; i < cidr.size; i++) got.add((await new ClusterIpPicker(store, cidr, new Set()).allocate([`default/s${i}`]))[0]!);
    assert.equal(got.size, 6);
    assert.ok(!got.has('10.96.0.0') && !got.has('10.96.0.7'));
    await assert.rejects(new ClusterIpPicker(store, cidr, new Set()).allocate(['default/late']), /no free ClusterIP left in 10\.96\.0\.0\/29/);
  });

  it('takes a ClusterIP with a few store calls whatever the number of Services', async () => {
    const store = new MemoryStore();
    const cidr = new ServiceCidr('10.96.0.0/12');
    for (let i = 0; i < 3000; i++) await store.createIfAbsent(clusterIpKey(cidr.random()), 'x/y');
    const before = store.writes.length;
    await new ClusterIpPicker(store, cidr, new Set()).allocate(['default/new']);
    assert.ok(store.writes.length - before <= 2, `${store.writes.length - before} writes`);
    const taken = new Set((await store.list('alloc/')).items.map((kv) => kv.key));
    const many = await new ClusterIpPicker(store, cidr, new Set(['10.96.0.1'])).allocate(Array.from({ length: 500 }, (_, i) => `default/m${i}`));
    assert.equal(new Set(many).size, 500);
    assert.ok(many.every((ip) => !taken.has(clusterIpKey(ip)) && ip !== '10.96.0.1'));
    assert.equal((await store.get(clusterIpKey(many[7]!)))?.value, 'default/m7');
  });

  it('picks free NodePorts in 30000-32767, none twice, avoiding taken and asked-for ones', async () => {
    const store = new MemoryStore();
    await store.createIfAbsent(nodePortKey(30000), 'default/x');
    const picker = new NodePortPicker(store, new Set([30001]));
    const got = new Set<number>();
    for (let i = 0; i < 2766; i++) got.add(await picker.allocate('default/y'));
    assert.equal(got.size, 2766);
    assert.ok(!got.has(30000) && !got.has(30001));
    assert.ok([...got].every((p) => p >= 30000 && p <= 32767));
    await assert.rejects(picker.allocate('default/z'), /no free nodePort left in 30000-32767/);
  });
});

describe('Registry.applyManifests', () => {
  it('creates, then reports unchanged and configured; keeps the ClusterIP, NodePorts, uid and creation time', async () => {
    const store = new MemoryStore();
    const r = new Registry(store);
    const text = svc('web', '  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80}]');
    const [first] = await r.applyManifests(docs(text));
    assert.equal(first!.action, 'created');
    const s = first!.service!;
    assert.ok(s.clusterIP && new ServiceCidr('10.96.0.0/12').refuse(s.clusterIP) === undefined, s.clusterIP);
    const nodePort = s.ports[0]!.nodePort!;
    assert.ok(nodePort >= 30000 && nodePort <= 32767);
    assert.deepEqual(await keys(store, 'alloc/'), [clusterIpKey(s.clusterIP), nodePortKey(nodePort)].sort());
    assert.equal((await r.applyManifests(docs(text)))[0]!.action, 'unchanged');
    const [again] = await r.applyManifests(docs(text.replace('app: web', 'app: web2')));
    assert.equal(again!.action, 'configured');
    assert.deepEqual(
      [again!.service!.clusterIP, again!.service!.ports[0]!.nodePort, again!.service!.uid, again!.service!.creationTimestamp],
      [s.clusterIP, nodePort, s.uid, s.creationTimestamp],
    );
    assert.deepEqual((await r.getService('default', 'web'))?.selector, { app: 'web2' });
  });

  it('takes an asked-for ClusterIP and NodePort; refuses them when taken, out of range or asked twice, and writes nothing', async () => {
    const store = new MemoryStore();
    const r = new Registry(store);
    await r.applyManifests(docs(svc('a', '  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{port: 80, nodePort: 30080}]')));
    const before = [...(await keys(store))];
    const writes = store.writes.length;
    const cases: [string, RegExp][] = [
      [
        svc('b', '  clusterIP: 10.96.0.10\n  ports: [{port: 80}]'),
        /document 1 \(line 1, Service default\/b\): spec\.clusterIP: clusterIP 10\.96\.0\.10 is already taken by Service default\/a/,
      ],
      [
        svc('b', '  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]'),
        /spec\.ports\[0\]\.nodePort: nodePort 30080 is already taken by Service default\/a/,
      ],
      [
        svc('b', '  clusterIP: 10.0.0.1\n  ports: [{port: 80}]'),
        /spec\.clusterIP: 10\.0\.0\.1 is outside the service range 10\.96\.0\.0\/12; leave spec\.clusterIP out/,
      ],
      [svc('b', '  clusterIP: 10.96.0.0\n  ports: [{port: 80}]'), /spec\.clusterIP: 10\.96\.0\.0 is the service range 10\.96\.0\.0\/12's network address/],
      [svc('b', '  type: NodePort\n  ports: [{port: 80, nodePort: 8080}]'), /spec\.ports\[0\]\.nodePort: 8080 is outside the NodePort range 30000-32767/],
      [
        svc('b', '  clusterIP: 10.96.0.20\n  ports: [{port: 80}]') + svc('c', '  clusterIP: 10.96.0.20\n  ports: [{port: 80}]'),
        /document 2 .*clusterIP 10\.96\.0\.20 is also asked for by Service default\/b/,
      ],
      [svc('a', '  clusterIP: 10.96.0.11\n  type: NodePort\n  ports: [{port: 80}]'), /spec\.clusterIP: is immutable: the Service has 10\.96\.0\.10/],
      [svc('b', '  ports: [{port: 80}]') + svc('b', '  ports: [{port: 81}]'), /document 2 .*Service default\/b appears twice in this apply/],
      // A valid Service beside an invalid one is not written either.
      [svc('ok', '  ports: [{port: 80}]') + svc('b', '  clusterIP: 10.96.0.10\n  ports: [{port: 80}]'), /already taken/],
      [svc('ok', '  ports: [{port: 80}]') + svc('b', '  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]'), /already taken/],
    ];
    for (const [text, re] of cases) {
      assert.match(await rejected(r.applyManifests(docs(text))), re);
      assert.deepEqual(await keys(store), before, `nothing left behind by:\n${text}`);
    }
    // The only writes were reservations undone at once.
    assert.ok(store.writes.slice(writes).every((w) => w.includes('alloc/')));
  });

  it('frees a ClusterIP and NodePorts on delete, and the ones an update gives up', async () => {
    const store = new MemoryStore();
    const r = new Registry(store);
    const [a] = await r.applyManifests(docs(svc('a', '  type: NodePort\n  ports: [{name: x, port: 80}, {name: y, port: 81, nodePort: 30081}]')));
    const ports = a!.service!.ports.map((p) => p.nodePort);
    await r.applyManifests(docs(svc('a', '  ports: [{name: x, port: 80}, {name: y, port: 81}]')));
    assert.deepEqual(await keys(store, 'alloc/nodeport/'), [], `freed ${ports.join(',')}`);
    await r.applyManifests(docs(svc('a', '  type: ExternalName\n  externalName: db.example.com')));
    assert.deepEqual(await keys(store, 'alloc/'), []);
    const [b] = await r.applyManifests(docs(svc('b', '  type: NodePort\n  ports: [{port: 80}]')));
    assert.equal((await keys(store, 'alloc/')).length, 2);
    assert.equal(await r.deleteService('default', 'b'), true);
    assert.equal(await r.deleteService('default', 'b'), false);
    assert.deepEqual(await keys(store, 'alloc/'), []);
    // The freed address can be asked for again.
    await r.applyManifests(docs(svc('c', `  clusterIP: ${b!.service!.clusterIP}\n  ports: [{port: 80}]`)));
  });

  it('writes EndpointSlices and Pod specs; lists by namespace', async () => {
    const r = new Registry(new MemoryStore());
    const text = [
      svc('ext', '  ports: [{port: 80}]', 'shop'),
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.5]}]\n---\n',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: web}}\nspec: {nodeName: node1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n',
    ].join('');
    const res = await r.applyManifests(docs(text));
    assert.deepEqual(
      res.map((x) => `${x.kind} ${x.namespace}/${x.name} ${x.action}`),
      ['Service shop/ext created', 'EndpointSlice shop/ext-1 created', 'Pod default/p created'],
    );
    assert.deepEqual(
      (await r.applyManifests(docs(text))).map((x) => x.action),
      ['unchanged', 'unchanged', 'unchanged'],
    );
    assert.equal((await r.listServices('shop')).length, 1);
    assert.equal((await r.listServices('default')).length, 0);
    assert.equal((await r.listSlices()).length, 1);
    const snap = await r.snapshot();
    assert.deepEqual([...snap.services.keys(), ...snap.slices.keys(), ...snap.pods.keys()], ['shop/ext', 'shop/ext-1', 'default/p']);
    assert.equal(await r.deleteSlice('shop', 'ext-1'), true);
  });

  it('applies 3,000 Services in one go with bounded parallel writes', async () => {
    const r = new Registry(new MemoryStore());
    const text = Array.from({ length: 3000 }, (_, i) => svc(`s${i}`, '  ports: [{port: 80}]')).join('');
    const res = await r.applyManifests(docs(text));
    assert.equal(new Set(res.map((x) => x.service!.clusterIP)).size, 3000);
  });
});

describe('Registry pods', () => {
  it('registers a pod on CNI ADD, keeps its spec, and unregisters only the same container', async () => {
    const r = new Registry(new MemoryStore());
    assert.equal(await r.putPodSpec({ namespace: 'default', name: 'p', labels: { app: 'web' }, ports: [], node: 'node1' }), 'created');
    const reg = await r.registerPod({ namespace: 'default', name: 'p', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
    assert.deepEqual([reg.labels, reg.ip, reg.ready, reg.terminating], [{ app: 'web' }, '10.244.1.5', true, false]);
    assert.equal(await r.putPodSpec({ namespace: 'default', name: 'p', labels: { app: 'web', v: '2' }, ports: [] }), 'configured');
    assert.equal((await r.getPod('default', 'p'))?.ip, '10.244.1.5', 'a spec update keeps the status');
    assert.equal((await r.getPod('default', 'p'))?.node, 'node1');
    assert.equal(await r.unregisterPod({ namespace: 'default', name: 'p', containerID: 'old' }), false);
    assert.ok(await r.getPod('default', 'p'));
    assert.equal(await r.unregisterPod({ namespace: 'default', name: 'p', containerID: 'c1' }), true);
    assert.equal(await r.getPod('default', 'p'), undefined);
    const fresh = await r.registerPod({ namespace: 'x', name: 'q', ip: '10.244.2.5', containerID: 'c2', node: 'node2' });
    assert.deepEqual([fresh.labels, fresh.ready], [{}, true]);
  });

  it('labels (set and remove), readiness and terminating; a missing pod is a not-found error', async () => {
    const r = new Registry(new MemoryStore());
    await r.registerPod({ namespace: 'default', name: 'p', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
    assert.deepEqual((await r.labelPod('default', 'p', { app: 'web', tier: 'a' })).labels, { app: 'web', tier: 'a' });
    assert.deepEqual((await r.labelPod('default', 'p', { tier: null })).labels, { app: 'web' });
    assert.equal((await r.setPodReady('default', 'p', false)).ready, false);
    assert.equal((await r.setPodTerminating('default', 'p', true)).terminating, true);
    await assert.rejects(r.labelPod('default', 'nope', { a: 'b' }), (e) => e instanceof RegistryError && /pod default\/nope does not exist/.test(e.message));
    assert.equal(await r.deletePod('default', 'p'), true);
    assert.deepEqual(await r.listPods(), []);
  });

  it('loses no update when two writers change one pod at once', async () => {
    const r = new Registry(new MemoryStore());
    await r.registerPod({ namespace: 'default', name: 'p', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
    await Promise.all(Array.from({ length: 20 }, (_, i) => r.labelPod('default', 'p', { [`k${i}`]: 'v' })));
    assert.equal(Object.keys((await r.getPod('default', 'p'))!.labels).length, 20);
  });
});

describe('RegistryCache', () => {
  it('lists, follows puts and deletes with old and new values, ignores allocation keys', async () => {
    const store = new MemoryStore();
    const r = new Registry(store);
    await r.applyManifests(docs(svc('a', '  selector: {app: a}\n  ports: [{port: 80}]')));
    const cache = new RegistryCache(store);
    const events: RegistryEvent[] = [];
    cache.on((e) => events.push(e));
    await cache.start();
    assert.ok(cache.synced);
    assert.deepEqual([...cache.services.keys()], ['default/a']);
    await r.registerPod({ namespace: 'default', name: 'p', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
    await r.labelPod('default', 'p', { app: 'a' });
    await r.applyManifests(docs(svc('b', '  ports: [{port: 80}]')));
    await r.deleteService('default', 'a');
    await waitFor(() => events.length >= 4 || undefined, { timeoutMs: 5000, what: 'four events' });
    assert.deepEqual(
      events.map((e) => (e.kind === 'resync' ? 'resync' : `${e.kind} ${e.type} ${e.key} ${e.old ? 'old' : '-'} ${e.now ? 'now' : '-'}`)),
      ['pod put default/p - now', 'pod put default/p old now', 'service put default/b - now', 'service delete default/a old -'],
    );
    const labelled = events[1] as RegistryEvent & { kind: 'pod' };
    assert.deepEqual([labelled.old?.labels, labelled.now?.labels], [{}, { app: 'a' }]);
    assert.deepEqual([...cache.services.keys()], ['default/b']);
    assert.equal(cache.pods.get('default/p')?.labels.app, 'a');
    cache.stop();
  });

  it('lists again and emits resync after compacted history or a store that lost its data; resumes quietly after an outage', async () => {
    const store = new MemoryStore();
    const r = new Registry(store);
    const cache = new RegistryCache(store);
    const events: RegistryEvent[] = [];
    cache.on((e) => events.push(e));
    await cache.start();

    store.setUnavailable(true);
    await r.registerPod({ namespace: 'default', name: 'x', ip: '10.244.1.9', containerID: 'c', node: 'n' }).catch(() => undefined);
    store.setUnavailable(false);
    await r.registerPod({ namespace: 'default', name: 'p', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
    await waitFor(() => cache.pods.has('default/p') || undefined, { timeoutMs: 10_000, what: 'the pod after the outage' });
    assert.ok(!events.some((e) => e.kind === 'resync'), 'an outage alone needs no re-list');

    store.reset();
    await r.registerPod({ namespace: 'default', name: 'q', ip: '10.244.1.6', containerID: 'c2', node: 'node1' });
    await waitFor(() => (cache.pods.has('default/q') && !cache.pods.has('default/p')) || undefined, { timeoutMs: 10_000, what: 'the re-list after the reset' });
    assert.ok(events.some((e) => e.kind === 'resync'));
    cache.stop();
  });

  it('lists again when the history it would resume from was compacted', async () => {
    const store = new MemoryStore();
    const r = new Registry(store);
    const cache = new RegistryCache(store);
    const events: RegistryEvent[] = [];
    cache.on((e) => events.push(e));
    await cache.start();
    store.setUnavailable(true);
    store.setUnavailable(false);
    // While the cache waits to resume, history it has not seen is written and compacted away.
    await r.registerPod({ namespace: 'default', name: 'p', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
    await r.registerPod({ namespace: 'default', name: 'q', ip: '10.244.1.6', containerID: 'c2', node: 'node1' });
    store.compact();
    await waitFor(() => (cache.pods.size === 2 && events.some((e) => e.kind === 'resync')) || undefined, {
      timeoutMs: 10_000,
      what: 'a re-list after compaction',
    });
    cache.stop();
  });
});
