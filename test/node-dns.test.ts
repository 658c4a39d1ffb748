import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ensureNodeDns, readDnsState, removeNodeDns } from '../src/agent/dns.js';
import { Topology } from '../src/topo/topology.js';

// The node-local DNS device and table in a namespace of their own: made, left alone, repaired, moved, removed.
const WEFT = fileURLToPath(new URL('../../bin/weft', import.meta.url));

let topo: Topology;
let ns: string;

before(async () => {
  topo = await Topology.create();
  ns = await topo.netns('node');
});

after(async () => {
  await topo.destroy();
});

test('ensureNodeDns makes the device, the /32 and the table once; a second run changes nothing', async () => {
  const first = await ensureNodeDns(ns, '10.96.0.10');
  assert.match(first[0]!, /^create (dummy )?device weft-dns/);
  assert.deepEqual(first.slice(1), ['put 10.96.0.10/32 on weft-dns, up', 'write nftables table ip weft-dns (notrack DNS to and from 10.96.0.10)']);
  assert.deepEqual(await readDnsState(ns, '10.96.0.10'), { device: true, up: true, addrs: ['10.96.0.10'], table: true });
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.10'), []);
});

test('drift is repaired: a removed address, a downed device, an emptied table', async () => {
  await topo.exec('node', ['ip', 'addr', 'del', '10.96.0.10/32', 'dev', 'weft-dns']);
  await topo.exec('node', ['ip', 'link', 'set', 'weft-dns', 'down']);
  await topo.exec('node', ['nft', 'flush', 'chain', 'ip', 'weft-dns', 'output']);
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.10'), [
    'put 10.96.0.10/32 on weft-dns, up',
    'write nftables table ip weft-dns (notrack DNS to and from 10.96.0.10)',
  ]);
  assert.deepEqual(await readDnsState(ns, '10.96.0.10'), { device: true, up: true, addrs: ['10.96.0.10'], table: true });
});

test('another cluster DNS IP replaces the old address and rules, leaving none of them', async () => {
  assert.equal((await ensureNodeDns(ns, '10.96.0.53')).length, 2);
  assert.deepEqual((await readDnsState(ns, '10.96.0.53')).addrs, ['10.96.0.53']);
  const table = (await topo.exec('node', ['nft', 'list', 'table', 'ip', 'weft-dns'])).stdout;
  assert.doesNotMatch(table, /10\.96\.0\.10/);
  assert.equal(table.match(/10\.96\.0\.53 meta l4proto/g)?.length, 3);
  await ensureNodeDns(ns, '10.96.0.10');
});

test('weft agent --cleanup removes the device and the table; removeNodeDns then has nothing to do', async () => {
  const r = await topo.exec('node', [process.execPath, WEFT, 'agent', '--cleanup', '--subnet-file', `${topo.dir}/none.env`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /delete device weft-dns/);
  assert.match(r.stderr, /delete nftables table ip weft-dns/);
  assert.deepEqual(await readDnsState(ns, '10.96.0.10'), { device: false, up: false, addrs: [], table: false });
  assert.deepEqual(await removeNodeDns(ns), []);
});

test('agent --help names the DNS options', async () => {
  const h = await topo.exec(undefined, [process.execPath, WEFT, 'agent', '--help']);
  for (const flag of ['--cluster-dns IP', '--cluster-domain DOMAIN', '--dns-ttl SECONDS', '--dns-upstream', '--no-dns'])
    assert.ok(h.stdout.includes(flag), flag);
  assert.match(h.stdout, /--cluster-dns IP .*\[default: 10\.96\.0\.10\]/);
});

test('lab up --dry-run shows kube-dns, the outside resolver, the agents forwarding to it and each pod resolv.conf', async () => {
  const r = await topo.exec(undefined, [process.execPath, WEFT, 'lab', 'up', '--dry-run', '--name', topo.id, '--nodes', '1', '--pods-per-node', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /"name":"kube-dns","namespace":"kube-system".*"clusterIP":"10\.96\.0\.10"/);
  assert.match(r.stdout, /workload-main\.js --socket \S+\/outside\/pods\.sock --dns &$/m);
  assert.match(r.stdout, /weft agent --node node1 .* --dns-upstream 198\.18\.0\.1 &$/m);
  assert.match(r.stdout, new RegExp(`^# /etc/netns/wl\\.${topo.id}\\.pod-1a/resolv\\.conf: the ADD result's dns`, 'm'));
});
