/**
 * The service proxy's tables against a real kernel, in disposable namespaces: what the netlink
 * encoder writes lists (nft) exactly as the rules' text; a real connection from the node through a
 * ClusterIP reaches a pod; a Service without endpoints refuses at once (from the node and through
 * it); one change is one
 * transaction that leaves other Services' rules alone; a full sync repairs drift made by hand;
 * stale UDP conntrack entries go with their endpoint; cleanup removes every table.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as op from '../src/kernel/ops.js';
import { nftTx } from '../src/kernel/nft.js';
import { nftGeneration } from '../src/kernel/nfnl.js';
import { apply, Plan } from '../src/kernel/plan.js';
import { PROXY_TABLES, ruleText, serviceRules, serviceTable, type Fragment, type ProxyNode } from '../src/proxy/rules.js';
import { cleanupProxy, ProxyTable } from '../src/proxy/table.js';
import { ServiceProxy, type ProxySource } from '../src/proxy/proxy.js';
import { createLogger } from '../src/agent/log.js';
import type { RegistryEvent } from '../src/service/cache.js';
import type { Endpoint, EndpointSliceRecord, PodRecord, Service } from '../src/service/types.js';
import { waitFor } from '../src/util/wait.js';
import { Topology } from '../src/topo/topology.js';

const node: ProxyNode = { name: 'n1', podNetwork: '10.244.0.0/16' };
const POD = '10.244.1.5';
const POD2 = '10.244.1.6';

const svc = (name: string, clusterIP: string, o: Partial<Service> = {}): Service => ({
  namespace: 'default',
  name,
  labels: {},
  type: 'ClusterIP',
  clusterIP,
  ports: [
    { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 },
    { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 },
  ],
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  externalTrafficPolicy: 'Cluster',
  internalTrafficPolicy: 'Cluster',
  uid: name,
  creationTimestamp: '2026-01-01T00:00:00Z',
  ...o,
});
const ep = (ip: string): Endpoint => ({
  ip,
  nodeName: 'n1',
  conditions: { ready: true, serving: true, terminating: false },
  ports: [
    { name: 'http', port: 8080, protocol: 'TCP' },
    { name: 'dns', port: 5353, protocol: 'UDP' },
  ],
});

let topo: Topology;
let ns: string;
let table: ProxyTable;

const nft = async (...args: string[]) => {
  const r = await topo.exec('node', ['nft', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
};
const ruleset = async () => (await Promise.all(PROXY_TABLES.map((t) => nft('list', 'table', 'ip', t)))).join('');

/** The backend that answered, and the client address it saw. */
const backend = (r: { ok?: string }) => /hello from (\S+)/.exec(r.ok ?? '')?.[1];
const clientSeen = (r: { ok?: string }) => / to (\S+)/.exec(r.ok ?? '')?.[1];

/** A TCP connect from the node to ip:port: what came back, or the error code. */
async function connect(ip: string, port: number, from = 'node'): Promise<{ ok?: string; error?: string; ms: number }> {
  const script = `const s=require('net').connect(${port},'${ip}');const t=Date.now();s.setTimeout(5000,()=>{console.log(JSON.stringify({error:'timeout',ms:Date.now()-t}));process.exit()});let d='';s.on('data',x=>d+=x);s.on('end',()=>{console.log(JSON.stringify({ok:d,ms:Date.now()-t}))});s.on('error',e=>console.log(JSON.stringify({error:e.code,ms:Date.now()-t})))`;
  const r = await topo.exec(from, [process.execPath, '-e', script]);
  return JSON.parse(r.stdout) as { ok?: string; error?: string; ms: number };
}

async function udpSend(ip: string, port: number): Promise<void> {
  const script = `const s=require('dgram').createSocket('udp4');s.bind(40053,()=>s.send('x',${port},'${ip}',()=>setTimeout(()=>process.exit(),200)))`;
  await topo.exec('node', [process.execPath, '-e', script]);
}

before(async () => {
  topo = await Topology.create();
  ns = await topo.netns('node');
  const pod = await topo.netns('pod');
  const client = await topo.netns('client');
  await apply(
    new Plan().add(
      op.addVeth({ ns, name: 'cni0', peer: { name: 'eth0', netns: pod } }),
      op.addAddr({ ns, addr: '10.244.1.1/24', dev: 'cni0' }),
      op.setLink({ ns, dev: 'cni0', up: true }),
      op.addAddr({ ns: pod, addr: `${POD}/24`, dev: 'eth0' }),
      op.addAddr({ ns: pod, addr: `${POD2}/24`, dev: 'eth0' }),
      op.setLink({ ns: pod, dev: 'eth0', up: true }),
      op.addRoute({ ns: pod, dst: 'default', via: '10.244.1.1' }),
      // The node reaches ClusterIPs through some route, as it would through its default route.
      op.addRoute({ ns, dst: '10.96.0.0/12', dev: 'cni0' }),
      // A client outside the pod Network, on a link of its own.
      op.addVeth({ ns, name: 'ext0', peer: { name: 'eth0', netns: client } }),
      op.addAddr({ ns, addr: '198.18.9.1/24', dev: 'ext0' }),
      op.addAddr({ ns, addr: '10.244.2.1/24', dev: 'ext0' }),
      op.setLink({ ns, dev: 'ext0', up: true }),
      op.addAddr({ ns: client, addr: '198.18.9.9/24', dev: 'eth0' }),
      op.addAddr({ ns: client, addr: '10.244.2.9/24', dev: 'eth0' }),
      op.setLink({ ns: client, dev: 'eth0', up: true }),
      op.addRoute({ ns: client, dst: 'default', via: '10.244.2.1' }),
      op.setSysctl({ ns, key: 'net.ipv4.ip_forward', value: '1' }),
    ),
  );
  topo.spawn('pod', [
    process.execPath,
    '-e',
    `require('net').createServer(s=>s.end('hello from '+s.localAddress+' to '+s.remoteAddress)).listen(8080,'0.0.0.0')`,
  ]);
  topo.spawn('pod', [process.execPath, '-e', `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address));s.bind(5353)`]);
  table = new ProxyTable(ns);
  for (let i = 0; i < 50 && !(await connect(POD, 8080)).ok; i++) await new Promise((r) => setTimeout(r, 100));
});

after(async () => {
  await topo.destroy();
});

describe('proxy tables in a kernel', () => {
  const web = () => serviceRules(node, svc('web', '10.96.0.10'), [ep(POD)]);
  const db = () => serviceRules(node, svc('db', '10.96.0.11'), [ep(POD), ep(POD2)]);
  const empty = () => serviceRules(node, svc('none', '10.96.0.12'), []);
  const all = (...fs: Fragment[]) => new Map(fs.map((f, i) => [String(i), f]));

  it('a full sync creates every table; each rule lists exactly as its text', async () => {
    const r = await table.sync(all(web(), db(), empty()));
    assert.ok(r.transactions >= 2);
    for (const f of [web(), db()])
      for (const [chain, rules] of f.chains) {
        const listed = (await nft('list', 'chain', 'ip', f.table, chain))
          .split('\n')
          .filter((l) => l.includes(' comment "'))
          .map((l) => l.trim().replace(/ comment ".*"$/, ''));
        assert.deepEqual(listed, rules.map(ruleText));
      }
    assert.deepEqual((await table.sync(all(web(), db(), empty()))).ops, 0);
  });

  it('the node reaches a pod through a ClusterIP; a Service without endpoints refuses at once', async () => {
    const r = await connect('10.96.0.10', 80);
    assert.equal(backend(r), POD);
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) seen.add(backend(await connect('10.96.0.11', 80)) ?? 'failed');
    assert.deepEqual([...seen].sort(), [POD, POD2]);
    // More than the kernel's ICMP burst: every one is refused at once (a TCP reset), from the node
    // (output hook) and from a client routed through it (prerouting).
    for (const from of ['node', 'client'])
      for (let i = 0; i < 12; i++) {
        const refused = await connect('10.96.0.12', 80, from);
        assert.equal(refused.error, 'ECONNREFUSED', from);
        assert.ok(refused.ms < 500, `refused after ${refused.ms} ms from ${from}`);
      }
  });

  it('one change is one transaction and leaves the other Services rules (their handles) alone', async () => {
    const handles = async () => (await nft('-a', 'list', 'table', 'ip', serviceTable('default', 'db'))).match(/# handle \d+/g)!.join(',');
    const dbBefore = await handles();
    const gen = await nftGeneration(ns);
    const moved = serviceRules(node, svc('web', '10.96.0.10'), [ep(POD2)]);
    const r = await table.update(new Map([['0', moved]]));
    assert.equal(r.transactions, 1);
    assert.equal(await nftGeneration(ns), gen + 1);
    if (serviceTable('default', 'web') !== serviceTable('default', 'db')) assert.equal(await handles(), dbBefore);
    assert.equal(backend(await connect('10.96.0.10', 80)), POD2);
    await table.update(new Map([['0', web()]]));
  });

  it("the tables stay trusted across this process's commits to other tables (the agent's peer set), not across anyone else's", async () => {
    await table.sync(all(web(), db(), empty()));
    assert.equal(await table.unchanged(), true);
    const peers = (verb: 'add' | 'delete', key: string) => op.nft({ ns, tx: nftTx('ip', 'own-peers')[verb]({ type: 'element', set: 'p', key }) });
    await apply(new Plan().add(op.nft({ ns, tx: nftTx('ip', 'own-peers').add({ type: 'table' }, { type: 'set', name: 'p', key: 'ipv4_addr' }) })));
    await apply(new Plan().add(peers('add', '198.18.0.12'), peers('add', '198.18.0.13'), peers('delete', '198.18.0.12')));
    assert.equal(await table.unchanged(), true, 'only our own commits since');
    const r = await table.sync(all(web(), db(), empty()));
    assert.equal(r.transactions, 0, 'a resync with nothing to do reads nothing and writes nothing');
    await nft('add', 'table', 'ip', 'someone-else');
    assert.equal(await table.unchanged(), false, 'another process committed');
    await nft('delete', 'table', 'ip', 'someone-else');
    await apply(new Plan().add(op.nft({ ns, tx: nftTx('ip', 'own-peers').delete({ type: 'table' }) })));
    await table.sync(all(web(), db(), empty()));
    assert.equal(await table.unchanged(), true, 'a full sync trusts the tables again');
  });

  it('a full sync repairs drift made by hand: a deleted rule, a deleted element, a stray chain, a deleted shard table, an old hook chain', async () => {
    const want = await ruleset();
    // An older agent's no-endpoint check in a filter hook, which every packet crossed.
    await nft('add', 'chain', 'ip', 'weft-proxy', 'filter-forward', '{ type filter hook forward priority -110; }');
    await nft('add', 'rule', 'ip', 'weft-proxy', 'filter-forward', 'ct', 'state', 'new', 'jump', 'endpoints-check');
    const dbTable = serviceTable('default', 'db');
    const webTable = serviceTable('default', 'web');
    const [webChain] = [...web().chains.keys()];
    const handle = /comment "[^"]*" # handle (\d+)/.exec(await nft('-a', 'list', 'chain', 'ip', webTable, webChain!))![1]!;
    await nft('delete', 'rule', 'ip', webTable, webChain!, 'handle', handle);
    await nft('delete', 'element', 'ip', 'weft-proxy', 'no-endpoint-services', '{', '10.96.0.12', '.', 'tcp', '.', '80', '}');
    await nft('add', 'chain', 'ip', webTable, 'service-DEADBEEF-x/y/tcp/z');
    if (dbTable !== webTable) await nft('delete', 'table', 'ip', dbTable);
    const r = await table.sync(all(web(), db(), empty()));
    assert.ok(r.changes.length > 0);
    assert.match(r.changes.join('\n'), /del chain: 1 \(service-DEADBEEF-x\/y\/tcp\/z\)/);
    assert.ok(r.changes.includes('delete chain filter-forward in weft-proxy'), r.changes.join('\n'));
    assert.equal(await ruleset(), want);
    assert.ok(backend(await connect('10.96.0.11', 80)));
  });

  it('a UDP endpoint that goes away takes its conntrack entries with it', async () => {
    await udpSend('10.96.0.10', 53);
    const listed = await topo.exec('node', ['conntrack', '-L', '-p', 'udp', '--orig-dst', '10.96.0.10']);
    assert.match(listed.stdout, new RegExp(`src=${POD.replace(/\./g, '\\.')} dst=\\S+ sport=5353`));
    const r = await table.update(new Map([['0', serviceRules(node, svc('web', '10.96.0.10'), [ep(POD2)])]]));
    assert.ok(r.conntrackDeleted >= 1, `deleted ${r.conntrackDeleted}`);
    const afterwards = await topo.exec('node', ['conntrack', '-L', '-p', 'udp', '--orig-dst', '10.96.0.10']);
    assert.doesNotMatch(afterwards.stdout, new RegExp(`src=${POD.replace(/\./g, '\\.')} `));
    await table.update(new Map([['0', web()]]));
  });

  it('a pod client keeps its IP; a pod reaching itself is masqueraded (hairpin)', async () => {
    const fromPod = await connect('10.96.0.10', 80, 'client');
    assert.deepEqual([backend(fromPod), clientSeen(fromPod)], [POD, '10.244.2.9']);
    const self = await connect('10.96.0.10', 80, 'pod');
    assert.deepEqual([backend(self), clientSeen(self)], [POD, '10.244.1.1']);
  });

  it('NodePort from outside: masqueraded with externalTrafficPolicy Cluster, client IP kept with Local', async () => {
    const np = (name: string, ip: string, nodePort: number, etp: 'Cluster' | 'Local') =>
      serviceRules(
        node,
        svc(name, ip, { type: 'NodePort', externalTrafficPolicy: etp, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort }] }),
        [ep(POD)],
      );
    await table.update(
      new Map([
        ['np', np('np', '10.96.0.13', 30080, 'Cluster')],
        ['npl', np('npl', '10.96.0.14', 30081, 'Local')],
      ]),
    );
    const cluster = await connect('198.18.9.1', 30080, 'client');
    assert.deepEqual([backend(cluster), clientSeen(cluster)], [POD, '10.244.1.1']);
    const local = await connect('198.18.9.1', 30081, 'client');
    assert.deepEqual([backend(local), clientSeen(local)], [POD, '198.18.9.9']);
  });

  it('ClientIP affinity sticks to one endpoint', async () => {
    const aff = serviceRules(node, svc('aff', '10.96.0.15', { sessionAffinity: 'ClientIP', affinityTimeoutSeconds: 60 }), [ep(POD), ep(POD2)]);
    await table.update(new Map([['aff', aff]]));
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) seen.add(backend(await connect('10.96.0.15', 80, 'client')) ?? 'none');
    assert.equal(seen.size, 1, [...seen].join(','));
    assert.ok(!seen.has('none'));
  });

  it('cleanup removes every table', async () => {
    assert.equal(await cleanupProxy(ns), true);
    assert.doesNotMatch(await nft('list', 'tables'), /weft-proxy/);
    assert.equal(await cleanupProxy(ns), false);
  });
});

/** RegistryCache's surface, driven by hand. */
class FakeCache implements ProxySource {
  readonly services = new Map<string, Service>();
  readonly pods = new Map<string, PodRecord>();
  readonly slices = new Map<string, EndpointSliceRecord>();
  private readonly listeners = new Set<(e: RegistryEvent) => void>();
  on(l: (e: RegistryEvent) => void): () => boolean {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  putPod(p: PodRecord): void {
    const key = `${p.namespace}/${p.name}`;
    const old = this.pods.get(key);
    this.pods.set(key, p);
    for (const l of this.listeners) l({ kind: 'pod', type: 'put', key, ...(old ? { old } : {}), now: p });
  }
  putService(s: Service): void {
    const key = `${s.namespace}/${s.name}`;
    this.services.set(key, s);
    for (const l of this.listeners) l({ kind: 'service', type: 'put', key, now: s });
  }
  deleteService(key: string): void {
    const old = this.services.get(key);
    this.services.delete(key);
    for (const l of this.listeners) l({ kind: 'service', type: 'delete', key, ...(old ? { old } : {}) });
  }
}

describe('ServiceProxy in a kernel', () => {
  const pod = (name: string, ip: string, o: Partial<PodRecord> = {}): PodRecord => ({
    namespace: 'default',
    name,
    labels: { app: 'web' },
    ports: [],
    node: 'n1',
    ip,
    ready: true,
    terminating: false,
    uid: name,
    creationTimestamp: '2026-01-01T00:00:00Z',
    ...o,
  });
  const cache = new FakeCache();
  const dead = new Set<string>();
  const logs: string[] = [];
  let proxy: ServiceProxy;
  const served = async (ip: string, n = 12) => {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) seen.add(backend(await connect(ip, 80)) ?? 'none');
    return [...seen].sort().join(',');
  };

  before(async () => {
    cache.services.set('default/web', svc('web', '10.96.0.20', { selector: { app: 'web' } }));
    cache.pods.set('default/p1', pod('p1', POD));
    proxy = new ServiceProxy({ node, cache, live: (ip) => !dead.has(ip), log: createLogger({ level: 'debug', write: (l) => logs.push(l) }), ns });
    await proxy.start();
  });

  after(async () => {
    await proxy.stop();
  });

  it('start: a full sync of what the cache holds', async () => {
    const st = proxy.status();
    assert.equal(st.services, 1);
    assert.equal(st.endpoints, 2);
    assert.ok(st.lastFullSync && st.lastSync?.reason === 'start');
    assert.equal(await served('10.96.0.20'), POD);
  });

  it('a pod event recomputes the Services selecting it, in one transaction', async () => {
    cache.putPod(pod('p2', POD2));
    await waitFor(() => proxy.status().endpoints === 4, { timeoutMs: 10_000, what: 'p2 in the rules' });
    assert.equal(proxy.status().lastSync?.transactions, 1);
    assert.equal(await served('10.96.0.20', 20), `${POD},${POD2}`);
    cache.putPod(pod('p1', POD, { ready: false, terminating: true }));
    await waitFor(() => proxy.status().endpoints === 2, { timeoutMs: 10_000, what: 'p1 out of the rules' });
    assert.equal(await served('10.96.0.20'), POD2);
  });

  it('leasesChanged drops endpoints whose node lease is gone', async () => {
    cache.putPod(pod('p1', POD));
    await waitFor(() => proxy.status().endpoints === 4, { timeoutMs: 10_000, what: 'p1 back' });
    dead.add(POD2);
    proxy.leasesChanged();
    await waitFor(() => proxy.status().endpoints === 2, { timeoutMs: 10_000, what: 'p2 gone with its lease' });
    assert.equal(await served('10.96.0.20'), POD);
    dead.delete(POD2);
    proxy.leasesChanged();
    await waitFor(() => proxy.status().endpoints === 4, { timeoutMs: 10_000, what: 'p2 back with its lease' });
  });

  it('resync repairs a table deleted by hand', async () => {
    await nft('delete', 'table', 'ip', serviceTable('default', 'web'));
    assert.equal((await connect('10.96.0.20', 80)).ok, undefined);
    await proxy.resync();
    assert.ok(proxy.status().lastSync!.changes > 0);
    assert.equal(await served('10.96.0.20', 20), `${POD},${POD2}`);
  });

  it('a Service that changes together with a periodic resync is applied', async () => {
    await proxy.resync();
    cache.putService(svc('web2', '10.96.0.21', { selector: { app: 'web' } }));
    await proxy.resync();
    assert.equal(proxy.status().services, 2);
    assert.ok(backend(await connect('10.96.0.21', 80)));
    cache.deleteService('default/web2');
    await waitFor(() => proxy.status().services === 1, { timeoutMs: 10_000, what: 'web2 gone' });
  });

  it('a deleted Service leaves the tables; after stop, events change nothing', async () => {
    cache.deleteService('default/web');
    await waitFor(() => proxy.status().services === 0, { timeoutMs: 10_000, what: 'web gone' });
    assert.doesNotMatch(await nft('list', 'map', 'ip', serviceTable('default', 'web'), 'service-ips'), /10\.96\.0\.20/);
    await proxy.stop();
    cache.putService(svc('web', '10.96.0.20', { selector: { app: 'web' } }));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(proxy.status().services, 0);
    assert.ok(!logs.some((l) => l.includes('ERROR')), logs.join('\n'));
  });
});
