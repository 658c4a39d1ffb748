import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseManifests } from '../src/service/manifest.js';
import { RegistryCache, type RegistryEvent } from '../src/service/cache.js';
import { Registry } from '../src/service/registry.js';
import type { Endpoint, PodRecord, Service } from '../src/service/types.js';
import { EtcdStore } from '../src/store/etcd.js';
import { base64, etcdGateway, startEtcd, type EtcdServer } from '../src/testing/etcd.js';
import { uniquePrefix, waitFor } from './store-support.js';

// The registry, its cache and the `weft service` / `weft endpoints` / `weft pod` commands against a real etcd.
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WEFT = join(ROOT, 'bin', 'weft');

const svcDoc = (name: string, spec: Record<string, unknown>, ns = 'default') => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec,
});
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const yamlOf = (docs: object[]) => docs.map((d) => JSON.stringify(d)).join('\n---\n');

describe('service registry against a real etcd', () => {
  let server: EtcdServer;
  let dir: string;
  before(async () => {
    server = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), 'weft-svc-'));
  });
  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const open = (prefix: string) => new EtcdStore({ endpoints: [server.endpoint], prefix });

  it('applies, caches and follows Services, slices and pods; the cache sees every change with old and new values', async () => {
    const store = open(uniquePrefix('reg'));
    const registry = new Registry(store);
    const cache = new RegistryCache(store);
    try {
      await registry.applyManifests(
        parseManifests(yamlOf([svcDoc('web', { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] })]), 't'),
      );
      await cache.start();
      assert.equal(cache.services.get('default/web')?.ports[0]?.targetPort, 'http');
      const events: RegistryEvent[] = [];
      cache.on((e) => events.push(e));
      await registry.putPodSpec({
        namespace: 'default',
        name: 'web-0',
        labels: { app: 'web' },
        ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
        node: 'node1',
      });
      await registry.registerPod({ namespace: 'default', name: 'web-0', ip: '10.244.1.7', containerID: 'c1', node: 'node1' });
      await registry.setPodReady('default', 'web-0', false);
      await registry.deleteService('default', 'web');
      await waitFor('four events', () => events.length >= 4);
      assert.deepEqual(
        events.map((e) => (e.kind === 'resync' ? e.kind : `${e.kind} ${e.type} ${e.key}`)),
        ['pod put default/web-0', 'pod put default/web-0', 'pod put default/web-0', 'service delete default/web'],
      );
      const ready = events[2] as RegistryEvent & { kind: 'pod' };
      assert.deepEqual([ready.old?.ready, ready.now?.ready, ready.now?.ip], [true, false, '10.244.1.7']);
      assert.equal(cache.services.size, 0);
    } finally {
      cache.stop();
      await store.close();
    }
  });

  it('lists 40,000 keys (more than one page) at one revision', async () => {
    const prefix = uniquePrefix('many');
    const value = base64('x'.repeat(200));
    try {
      for (let i = 0; i < 40_000; i += 100) {
        const keys = Array.from({ length: 100 }, (_, j) => base64(`${prefix}/services/default/s${String(i + j).padStart(5, '0')}`));
        await etcdGateway(server.endpoint, '/v3/kv/txn', { success: keys.map((key) => ({ request_put: { key, value } })) });
      }
      const store = open(prefix);
      const started = performance.now();
      const listing = await store.list('services/');
      const ms = performance.now() - started;
      await store.close();
      assert.equal(listing.items.length, 40_000);
      assert.equal(new Set(listing.items.map((kv) => kv.key)).size, 40_000);
      assert.equal(listing.items[39_999]!.key, 'services/default/s39999');
      assert.ok(ms < 20_000, `listing took ${ms.toFixed(0)} ms`);
    } finally {
      await etcdGateway(server.endpoint, '/v3/kv/deleterange', { key: base64(`${prefix}/`), range_end: base64(`${prefix}0`) });
    }
  });

  it('applies 30,000 Services with their EndpointSlices, each with its own ClusterIP; one more at that size costs what the first did', async () => {
    const store = open(uniquePrefix('bulk'));
    const registry = new Registry(store);
    const cache = new RegistryCache(store);
    const docs = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, k) => [
        svcDoc(`s${from + k}`, { ports: [{ port: 80 }] }),
        {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: { name: `s${from + k}-1`, labels: { 'kubernetes.io/service-name': `s${from + k}` } },
          addressType: 'IPv4',
          ports: [{ port: 8080 }],
          endpoints: [{ addresses: ['10.244.1.2'] }, { addresses: ['10.244.2.2'] }],
        },
      ]).flat();
    const timed = async (from: number, to: number) => {
      const started = performance.now();
      const results = await registry.applyManifests(parseManifests(yamlOf(docs(from, to)), 'bulk'));
      return { results, ms: performance.now() - started };
    };
    try {
      const first = await timed(0, 1);
      const bulk = await timed(1, 30_000);
      assert.equal(bulk.results.length, 59_998);
      const ips = new Set([...first.results, ...bulk.results].filter((r) => r.service).map((r) => r.service!.clusterIP));
      assert.equal(ips.size, 30_000);
      assert.ok(bulk.ms < 180_000, `apply took ${bulk.ms.toFixed(0)} ms`);
      const one = await timed(30_000, 30_001);
      assert.ok(one.ms < Math.max(2000, first.ms * 5), `one more at 30,000: ${one.ms.toFixed(0)} ms; the first took ${first.ms.toFixed(0)} ms`);
      await cache.start();
      assert.deepEqual([cache.services.size, cache.slices.size], [30_001, 30_001]);
    } finally {
      cache.stop();
      await store.close();
    }
  });

  it('a store that lost its data (a new etcd on the same address): the cache lists again and emits resync', async () => {
    const ports = { clientPort: await freePort(), peerPort: await freePort() };
    let etcd = await startEtcd(ports);
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/weft' });
    const registry = new Registry(store);
    const cache = new RegistryCache(store);
    try {
      await registry.registerPod({ namespace: 'default', name: 'old', ip: '10.244.1.2', containerID: 'c', node: 'n' });
      await cache.start();
      const events: RegistryEvent[] = [];
      cache.on((e) => events.push(e));
      await etcd.stop();
      etcd = await startEtcd(ports);
      await waitFor('the cache to list the new store', () => events.some((e) => e.kind === 'resync'), 30_000);
      assert.equal(cache.pods.size, 0);
      await registry.registerPod({ namespace: 'default', name: 'new', ip: '10.244.1.3', containerID: 'c', node: 'n' });
      await waitFor('the new pod', () => cache.pods.has('default/new'), 30_000);
    } finally {
      cache.stop();
      await store.close();
      await etcd.stop();
    }
  });

  describe('the CLI', () => {
    let prefix: string;
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [WEFT, ...args, '--etcd-endpoints', server.endpoint, '--registry-prefix', prefix], { encoding: 'utf8', timeout: 30_000 });
    const json = <T>(...args: string[]): T => {
      const r = run(...args, '--json');
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as T;
    };
    const file = (name: string, text: string) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    };
    before(() => {
      prefix = uniquePrefix('cli');
    });

    it('service apply: creates, allocates, reports unchanged; get as table, JSON and YAML; delete frees', () => {
      const path = file(
        'web.yaml',
        [
          'apiVersion: v1',
          'kind: Service',
          'metadata: {name: web, labels: {tier: front}}',
          'spec:',
          '  type: NodePort',
          '  selector: {app: web}',
          '  ports:',
          '  - {name: http, port: 80, targetPort: http, nodePort: 30080}',
          '---',
          'apiVersion: v1',
          'kind: Pod',
          'metadata: {name: web-0, labels: {app: web}}',
          'spec: {nodeName: node1, containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]}',
        ].join('\n'),
      );
      const created = run('service', 'apply', '-f', path);
      assert.equal(created.status, 0, created.stderr);
      assert.match(created.stdout, /^service\/web created \(10\.\d+\.\d+\.\d+, nodePorts 30080\)$/m);
      assert.match(created.stdout, /^pod\/web-0 created$/m);
      assert.match(run('service', 'apply', '-f', path).stdout, /^service\/web unchanged/m);

      const table = run('service', 'get');
      assert.equal(table.status, 0, table.stderr);
      assert.match(table.stdout, /^web\s+NodePort\s+10\.\d+\.\d+\.\d+\s+http:80:30080\/TCP→http\s+app=web\s+\d+s$/m);
      const stored = json<Service>('service', 'get', 'web');
      assert.equal(stored.ports[0]!.nodePort, 30080);
      const yaml = run('service', 'get', 'web', '-o', 'yaml');
      assert.match(yaml.stdout, /^kind: Service$/m);
      assert.match(yaml.stdout, new RegExp(`clusterIP: ${stored.clusterIP!.replace(/\./g, '\\.')}`));
      // What get -o yaml prints applies back unchanged.
      const back = spawnSync(process.execPath, [WEFT, 'service', 'apply', '-f', '-', '--etcd-endpoints', server.endpoint, '--registry-prefix', prefix], {
        input: yaml.stdout,
        encoding: 'utf8',
      });
      assert.equal(back.status, 0, back.stderr);
      assert.match(back.stdout, /^service\/web unchanged/m);
      const list = JSON.parse(run('service', 'get', '-o', 'json').stdout) as { kind: string; items: { spec: { clusterIP: string } }[] };
      assert.deepEqual([list.kind, list.items[0]?.spec.clusterIP], ['List', stored.clusterIP]);

      const missing = run('service', 'get', 'nope');
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /service default\/nope not found/);
      assert.equal(run('service', 'delete', 'web').status, 0);
      assert.equal(run('service', 'delete', 'web').status, 1);
      assert.match(run('service', 'get').stdout, /no Services in namespace default/);
    });

    it('service apply: an invalid document writes nothing and says what to fix, per document and field', () => {
      const path = file(
        'bad.yaml',
        [
          'apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}',
          'apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{name: a, port: 70000}, {name: a, port: 81}], colour: blue}',
        ].join('\n---\n'),
      );
      const r = run('service', 'apply', '-f', path);
      assert.equal(r.status, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^weft: nothing was written; 3 problems to fix:$/m);
      assert.match(r.stderr, /bad\.yaml: document 2 \(line 6, Service default\/bad\): spec\.colour: unknown field "colour"/);
      assert.match(r.stderr, /document 2 .*: spec\.ports\[0\]\.port: 70000 is out of range; a port must be 1-65535/);
      assert.match(r.stderr, /document 2 .*: spec\.ports\[1\]\.name: duplicate port name "a"/);
      assert.equal(json<Service[]>('service', 'get').length, 0);

      const taken = file('taken.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: t1}\nspec: {clusterIP: 10.96.7.7, ports: [{port: 80}]}');
      assert.equal(run('service', 'apply', '-f', taken).status, 0);
      const other = run(
        'service',
        'apply',
        '-f',
        file('other.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: t1}\nspec: {ports: [{port: 80}]}'),
        '-n',
        'other',
      );
      assert.equal(other.status, 0, other.stderr);
      assert.match(other.stdout, /^service\/t1 -n other created/m);
      const clash = run(
        'service',
        'apply',
        '-f',
        file(
          'clash.yaml',
          'apiVersion: v1\nkind: Service\nmetadata: {name: t2}\nspec: {clusterIP: 10.96.7.8, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: t3}\nspec: {clusterIP: 10.96.7.7, ports: [{port: 80}]}',
        ),
      );
      assert.equal(clash.status, 1);
      assert.match(clash.stderr, /document 2 \(line 6, Service default\/t3\): spec\.clusterIP: clusterIP 10\.96\.7\.7 is already taken by Service default\/t1/);
      assert.equal(run('service', 'get', 't2').status, 1, 't2 was valid but is not written either');
      const usage = run('service', 'apply');
      assert.equal(usage.status, 2);
    });

    it('pod label/ready/terminating and endpoints: what a Service selects follows the pods', async () => {
      const path = file(
        'app.yaml',
        [
          'apiVersion: v1\nkind: Service\nmetadata: {name: app}\nspec: {selector: {app: a}, ports: [{port: 80, targetPort: 8080}]}',
          'apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec: {nodeName: node1, containers: [{name: c}]}',
          'apiVersion: v1\nkind: Pod\nmetadata: {name: p2, labels: {app: a}}\nspec: {nodeName: node2, containers: [{name: c}]}',
        ].join('\n---\n'),
      );
      assert.equal(run('service', 'apply', '-f', path).status, 0);
      // Pods get their IPs from the CNI path; here the registry stands in for it.
      const store = open(prefix);
      const registry = new Registry(store);
      await registry.registerPod({ namespace: 'default', name: 'p1', ip: '10.244.1.5', containerID: 'c1', node: 'node1' });
      await registry.registerPod({ namespace: 'default', name: 'p2', ip: '10.244.2.5', containerID: 'c2', node: 'node2' });
      await store.close();

      const ips = () =>
        json<{ endpoints: Endpoint[] }>('endpoints', 'app').endpoints.map(
          (e) => `${e.ip} ${e.conditions.ready ? 'ready' : e.conditions.serving ? 'serving' : 'no'}`,
        );
      assert.deepEqual(ips(), ['10.244.2.5 ready']);
      const label = run('pod', 'label', 'p1', 'app=a', 'extra=1');
      assert.equal(label.status, 0, label.stderr);
      assert.match(label.stdout, /pod\/p1 labeled: app=a,extra=1/);
      assert.deepEqual(ips(), ['10.244.1.5 ready', '10.244.2.5 ready']);
      assert.deepEqual(json<PodRecord>('pod', 'label', 'p1', 'extra-').labels, { app: 'a' });
      assert.equal(run('pod', 'ready', 'p2', 'false').status, 0);
      assert.deepEqual(ips(), ['10.244.1.5 ready', '10.244.2.5 no']);
      assert.equal(run('pod', 'terminating', 'p1', 'true').status, 0);
      assert.deepEqual(ips(), ['10.244.1.5 serving', '10.244.2.5 no']);
      const table = run('endpoints');
      assert.match(table.stdout, /^app\s+10\.244\.1\.5\s+node1\s+terminating, serving\s+8080\/TCP\s+p1$/m);
      const pods = run('pod', 'get');
      assert.match(pods.stdout, /^p1\s+node1\s+10\.244\.1\.5\s+terminating\s+app=a\s+-$/m);

      // A node whose flannel lease is gone takes its pods' endpoints with it.
      const flannel = new EtcdStore({ endpoints: [server.endpoint], prefix: '/coreos.com/network' });
      await flannel.put('config', '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
      await flannel.put('subnets/10.244.2.0-24', '{"PublicIP":"198.18.0.3","PublicIPv6":null}');
      assert.deepEqual(ips(), ['10.244.2.5 no']);
      await flannel.delete('config');
      await flannel.delete('subnets/10.244.2.0-24');
      await flannel.close();

      const bad = run('pod', 'label', 'p1', 'no_equals');
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /"no_equals" is neither KEY=VALUE/);
      assert.equal(run('pod', 'ready', 'p1', 'yes').status, 2);
      const missing = run('pod', 'ready', 'ghost', 'true');
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /pod default\/ghost does not exist/);
      const inside = spawnSync(process.execPath, [WEFT, 'pod', 'get', '--etcd-endpoints', server.endpoint, '--registry-prefix', '/coreos.com/network/weft'], {
        encoding: 'utf8',
      });
      assert.equal(inside.status, 2);
      assert.match(inside.stderr, /lies inside flannel's --etcd-prefix/);
    });
  });
});
