import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ensureNodeDns, readDnsState, removeNodeDns } from '../src/agent/dns.js';
import { HostGwBackend } from '../src/backend/hostgw.js';
import { readActual, reconcile } from '../src/backend/reconcile.js';
import type { NodeInfo } from '../src/backend/types.js';
import { parseCidr } from '../src/ip/cidr.js';
import { apply } from '../src/kernel/plan.js';
import { Topology } from '../src/topo/topology.js';

// The node-local DNS device in a namespace of its own (made, left alone, repaired, moved, removed), its notrack rules in ip weft, and an earlier agent's table.
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

const OLD_TABLE = [
  'add table ip weft-dns',
  'add chain ip weft-dns prerouting { type filter hook prerouting priority raw; }',
  'add rule ip weft-dns prerouting ip daddr 10.96.0.10 meta l4proto { tcp, udp } th dport 53 notrack',
].join('\n');
const tables = async () => (await topo.exec('node', ['nft', 'list', 'tables'])).stdout;

test('ensureNodeDns makes the device and the /32 once, and no table; a second run changes nothing', async () => {
  const first = await ensureNodeDns(ns, '10.96.0.10');
  assert.match(first[0]!, /^create (dummy )?device weft-dns/);
  assert.deepEqual(first.slice(1), ['put 10.96.0.10/32 on weft-dns, up']);
  assert.deepEqual(await readDnsState(ns), { device: true, up: true, addrs: ['10.96.0.10'], oldTable: false });
  assert.doesNotMatch(await tables(), /weft/);
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.10'), []);
});

test('drift is repaired: a removed address, a downed device', async () => {
  await topo.exec('node', ['ip', 'addr', 'del', '10.96.0.10/32', 'dev', 'weft-dns']);
  await topo.exec('node', ['ip', 'link', 'set', 'weft-dns', 'down']);
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.10'), ['put 10.96.0.10/32 on weft-dns, up']);
  assert.deepEqual(await readDnsState(ns), { device: true, up: true, addrs: ['10.96.0.10'], oldTable: false });
});

test('another cluster DNS IP replaces the old address', async () => {
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.53'), ['put 10.96.0.53/32 on weft-dns, up']);
  assert.deepEqual((await readDnsState(ns)).addrs, ['10.96.0.53']);
  await ensureNodeDns(ns, '10.96.0.10');
});

test('upgraded in place: ensureNodeDns deletes the table of its own an earlier agent wrote, and leaves other tables', async () => {
  assert.equal((await topo.exec('node', ['nft', '-f', '-'], { input: `${OLD_TABLE}\nadd table ip other\n` })).code, 0);
  assert.equal((await readDnsState(ns)).oldTable, true);
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.10'), ["delete nftables table ip weft-dns (an earlier agent's: the notrack rules are in ip weft now)"]);
  assert.doesNotMatch(await tables(), /table ip weft-dns/);
  assert.match(await tables(), /table ip other/);
  assert.deepEqual(await ensureNodeDns(ns, '10.96.0.10'), []);
  await topo.exec('node', ['nft', 'delete', 'table', 'ip', 'other']);
});

test("a host-gw node's reconcile writes the notrack rules into ip weft's raw chains, which the kernel takes and reads back as written", async () => {
  const node: NodeInfo = { name: 'node', iface: 'eth0', ifaceMtu: 1500, publicIP: '198.18.0.11', ifaceNets: [] };
  const desired = new HostGwBackend(node).desired({ subnet: parseCidr('10.244.1.0/24'), attrs: { publicIP: '198.18.0.11', backendType: 'host-gw' } }, [], {
    network: parseCidr('10.244.0.0/16'),
    ipMasq: false,
    dns: '10.96.0.10',
  });
  await apply(reconcile(ns, desired, await readActual(ns, desired)).plan);
  const table = (await topo.exec('node', ['nft', 'list', 'table', 'ip', 'weft'])).stdout;
  assert.match(
    table,
    /chain raw-prerouting \{\n\s+type filter hook prerouting priority raw; policy accept;\n\s+ip daddr 10\.96\.0\.10 meta l4proto \{ tcp, udp \} th dport 53 notrack comment "weft:\w+:0"\n\s+\}/,
  );
  assert.match(
    table,
    /chain raw-output \{\n.*\n\s+ip daddr 10\.96\.0\.10 .* th dport 53 notrack comment "weft:\w+:0"\n\s+ip saddr 10\.96\.0\.10 .* th sport 53 notrack comment "weft:\w+:1"\n\s+\}/,
  );
  assert.doesNotMatch(table, /vxlan/);
  assert.deepEqual(reconcile(ns, desired, await readActual(ns, desired)).changes, []);
});

test('weft agent --cleanup removes the device, ip weft with its notrack rules, and a table an earlier agent left; removeNodeDns then has nothing to do', async () => {
  assert.equal((await topo.exec('node', ['nft', '-f', '-'], { input: `${OLD_TABLE}\n` })).code, 0);
  const r = await topo.exec('node', [process.execPath, WEFT, 'agent', '--cleanup', '--subnet-file', `${topo.dir}/none.env`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /delete device weft-dns/);
  assert.match(r.stderr, /remove nftables table ip weft\b/);
  assert.match(r.stderr, /delete nftables table ip weft-dns/);
  assert.deepEqual(await readDnsState(ns), { device: false, up: false, addrs: [], oldTable: false });
  assert.doesNotMatch(await tables(), /weft/);
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
