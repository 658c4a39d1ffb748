import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { listNetns } from '../src/kernel/netns.js';
import { Topology } from '../src/topo/topology.js';
import { waitFor } from '../src/util/wait.js';
import { weft } from './lab-cli.js';

/** The lab is named after the test run's topology id, so the sweeper knows whose it is. */
let topo: Topology;
let lab: string;

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
});

after(async () => {
  weft('lab', 'down', '--name', lab);
  await topo.destroy();
  assert.equal(listNetns().filter((n) => n.includes(lab)).length, 0, 'lab down left namespaces');
});

test('lab up builds 3 nodes x 2 pods, verify passes, and verify fails naming a pair we break', () => {
  const up = weft('lab', 'up', '--name', lab);
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /node3 +198\.18\.0\.13 +10\.244\.\d+\.1\/24 +vxlan/);
  assert.match(up.out, /pod-3b +node3 +10\.244\./);

  const ok = weft('verify', '--name', lab, '--json');
  const report = JSON.parse(ok.stdout) as { passed: number; failed: number; results: { ok: boolean; group: string; evidence: string }[] };
  assert.equal(report.failed, 0, ok.out);
  for (const group of [
    'pod → pod, same node',
    'pod → pod, across nodes',
    'node → pod, other node',
    'pod sees its own IP',
    'containers in one pod share localhost',
    'pod → outside is masqueraded',
    'path MTU across nodes',
  ]) {
    assert.ok(
      report.results.some((r) => r.group === group && r.ok),
      `no passing check in "${group}"`,
    );
  }
  assert.equal(ok.code, 0);

  const status = JSON.parse(weft('lab', 'status', '--name', lab, '--json').out) as { pods: { name: string; ip: string; ns: string }[] };
  const [p1a, p2a] = ['pod-1a', 'pod-2a'].map((n) => status.pods.find((p) => p.name === n)!);
  // Break one direction on purpose: pod-2a refuses new flows from pod-1a (its replies to pod-2a still pass).
  const drop = `table ip brk {\n  chain input {\n    type filter hook input priority 0;\n    ip saddr ${p1a!.ip} ct state new drop\n  }\n}\n`;
  const nft = spawnSync('ip', ['netns', 'exec', p2a!.ns, 'nft', '-f', '-'], { input: drop, encoding: 'utf8' });
  assert.equal(nft.status, 0, nft.stderr);
  const broken = weft('verify', '--name', lab);
  assert.notEqual(broken.code, 0, 'verify passed on a broken network');
  assert.match(broken.out, new RegExp(`✗ tcp +pod-1a ${p1a!.ip.replace(/\./g, '\\.')} → pod-2a`));
  assert.match(broken.out, /✗ udp +pod-1a .* → pod-2a/);
  assert.doesNotMatch(broken.out, /✗ \w+ +pod-2a .* → pod-1a/, 'the other direction was not broken');

  spawnSync('ip', ['netns', 'exec', p2a!.ns, 'nft', 'delete', 'table', 'ip', 'brk']);
  assert.equal(weft('verify', '--name', lab).code, 0, 'verify still fails after the break was mended');

  const exec = weft('lab', 'exec', '--name', lab, 'pod-1b', '--', 'ping', '-c', '1', '-W', '2', 'pod-3a');
  assert.equal(exec.code, 0, exec.out);
});

/** `ip -4 neigh` of every namespace of `name`'s lab: `ns dst lladdr state` per entry. */
function neighbourTable(name: string): { ns: string; dst: string; mac: string; permanent: boolean }[] {
  return listNetns()
    .filter((ns) => ns.startsWith(`wl.${name}.`))
    .flatMap((ns) =>
      spawnSync('ip', ['-n', ns, '-4', 'neigh', 'show'], { encoding: 'utf8' })
        .stdout.split('\n')
        .filter(Boolean)
        .map((line) => ({ ns, dst: line.split(' ')[0]!, mac: /lladdr (\S+)/.exec(line)?.[1] ?? '', permanent: / PERMANENT\b/.test(line) })),
    );
}

const UNDERLAY_MEMBERS = ['outside', 'etcd', 'node1', 'node2', 'node3'];

test('static neighbours: every underlay member and pod holds permanent entries, and verify (every pair, across nodes and on one) makes no dynamic one', () => {
  const table = neighbourTable(lab);
  const dynamic = table.filter((n) => !n.permanent);
  assert.deepEqual(dynamic, [], 'the kernel ARPed: the lab would eat into the one neighbour table every namespace shares');
  // The underlay: each member has every other member's IP with the MAC derived from it (0a:58 + IP).
  const ips: Record<string, string> = { outside: '198.18.0.1', etcd: '198.18.0.2', node1: '198.18.0.11', node2: '198.18.0.12', node3: '198.18.0.13' };
  const mac = (ip: string) =>
    `0a:58:${ip
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join(':')}`;
  for (const m of UNDERLAY_MEMBERS) {
    const have = table.filter((n) => n.ns === `wl.${lab}.${m}` && n.dst.startsWith('198.18.0.')).map((n) => `${n.dst} ${n.mac}`);
    const want = UNDERLAY_MEMBERS.filter((o) => o !== m).map((o) => `${ips[o]} ${mac(ips[o]!)}`);
    for (const w of want) assert.ok(have.includes(w), `${m} lacks ${w}: ${have.join(', ')}`);
  }
  // Pods: the gateway, and the node's bridge: every pod of the node.
  const status = JSON.parse(weft('lab', 'status', '--name', lab, '--json').out) as { pods: { name: string; ip: string; ns: string; node: string }[] };
  for (const p of status.pods) {
    const gw = p.ip.replace(/\.\d+$/, '.1');
    assert.ok(
      table.some((n) => n.ns === p.ns && n.dst === gw && n.permanent),
      `${p.name} has no permanent entry for its gateway ${gw}`,
    );
    assert.ok(
      table.some((n) => n.ns === `wl.${lab}.${p.node}` && n.dst === p.ip && n.permanent),
      `${p.node}'s bridge has no permanent entry for ${p.name}`,
    );
  }
  // A probe across nodes and one on a node, again: still nothing dynamic.
  for (const to of ['pod-2a', 'pod-1b', '203.0.113.1'])
    assert.equal(weft('lab', 'exec', '--name', lab, 'pod-1a', '--', 'ping', '-c', '1', '-W', '2', to).code, 0);
  assert.deepEqual(
    neighbourTable(lab).filter((n) => !n.permanent),
    [],
  );
});

test('pod add and rm go through the CNI plugin and rm leaves no trace', () => {
  const add = weft('lab', 'pod', 'add', 'web', '--node', 'node2', '--name', lab);
  assert.equal(add.code, 0, add.out);
  const ip = /with IP (\S+)/.exec(add.out)![1]!;
  const reach = weft('lab', 'exec', '--name', lab, 'pod-1a', '--', 'ping', '-c', '1', '-W', '2', 'web');
  assert.equal(reach.code, 0, reach.out);
  const node2 = `wl.${lab}.node2`;
  const vethsBefore = spawnSync('ip', ['-n', node2, '-o', 'link', 'show', 'type', 'veth'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).length;

  const rm = weft('lab', 'pod', 'rm', 'web', '--name', lab);
  assert.equal(rm.code, 0, rm.out);
  assert.ok(!listNetns().includes(`wl.${lab}.web`), 'pod namespace left behind');
  const vethsAfter = spawnSync('ip', ['-n', node2, '-o', 'link', 'show', 'type', 'veth'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).length;
  assert.equal(vethsAfter, vethsBefore - 1, 'host veth left behind');
  assert.ok(!neighbourTable(lab).some((n) => n.dst === ip), `CNI DEL left a neighbour entry for ${ip}`);
  const ipam = spawnSync('ls', [`/run/weft/lab/${lab}/nodes/node2/ipam/weft`], { encoding: 'utf8' }).stdout;
  assert.doesNotMatch(ipam, new RegExp(`^${ip.replace(/\./g, '\\.')}$`, 'm'), 'IP reservation left behind');
});

test('a node joins and leaves, and the others converge', async () => {
  const add = weft('lab', 'node', 'add', '--name', lab);
  assert.equal(add.code, 0, add.out);
  const [, node, subnet] = /node (\S+) joined at \S+ with subnet (\S+)/.exec(add.out)!;
  const base = subnet!.replace(/\.1\/24$/, '.0/24');
  const nodes = (JSON.parse(weft('lab', 'status', '--name', lab, '--json').out) as { nodes: { name: string; ip: string }[] }).nodes;
  const nodeIp = nodes.find((n) => n.name === node)!.ip;
  const knowing = () =>
    new Set(
      neighbourTable(lab)
        .filter((n) => n.dst === nodeIp && n.permanent)
        .map((n) => n.ns.split('.').pop()),
    );
  for (const m of UNDERLAY_MEMBERS) assert.ok(knowing().has(m), `${m} has no permanent entry for the new ${node} ${nodeIp}`);
  const routeOn = (n: string) => spawnSync('ip', ['-n', `wl.${lab}.${n}`, 'route', 'show', base], { encoding: 'utf8' }).stdout.trim();
  await waitFor(() => routeOn('node1') !== '', { timeoutMs: 10_000, intervalMs: 100, what: `node1's route to ${node}'s subnet` });
  assert.match(routeOn('node1'), /dev flannel\.1/, `node1 has no route to ${node}'s subnet`);
  const pod = weft('lab', 'pod', 'add', 'joiner', '--node', node!, '--name', lab);
  assert.equal(pod.code, 0, pod.out);
  const reach = weft('lab', 'exec', '--name', lab, 'pod-1a', '--', 'ping', '-c', '1', '-W', '2', 'joiner');
  assert.equal(reach.code, 0, reach.out);

  const rm = weft('lab', 'node', 'rm', node!, '--name', lab);
  assert.equal(rm.code, 0, rm.out);
  await waitFor(() => routeOn('node1') === '', { timeoutMs: 10_000, intervalMs: 100, what: `node1 to drop the route to the removed ${node}` });
  assert.deepEqual([...knowing()], [], `node rm left entries for ${nodeIp}`);
  assert.equal(weft('verify', '--name', lab).code, 0, 'verify fails after the node left');
});

test('a second lab runs beside the first, up again changes nothing; down is idempotent and removes a half-built lab', () => {
  const second = `${lab}-b`;
  try {
    const up = weft('lab', 'up', '--name', second, '--nodes', '1', '--pods-per-node', '1', '--backend', 'host-gw');
    assert.equal(up.code, 0, up.out);
    const again = weft('lab', 'up', '--name', second);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /every process of it answers; nothing to restart/);
  } finally {
    assert.equal(weft('lab', 'down', '--name', second).code, 0);
  }
  assert.equal(listNetns().filter((n) => n.startsWith(`wl.${second}.`)).length, 0);
  assert.match(weft('lab', 'down', '--name', second).out, /nothing to remove/);
  // The first lab is untouched by all of that.
  const v = weft('verify', '--name', lab);
  assert.equal(v.code, 0, v.out);

  // Half built: namespaces without a state file.
  const half = `${lab}-h`;
  spawnSync('ip', ['netns', 'add', `wl.${half}.underlay`]);
  spawnSync('ip', ['netns', 'add', `wl.${half}.node1`]);
  assert.equal(weft('lab', 'down', '--name', half).code, 0);
  assert.equal(listNetns().filter((n) => n.startsWith(`wl.${half}.`)).length, 0);
});

test('underlay mode: macvlan pods verify, and a missing host shim is reported as such', () => {
  const under = `${lab}-u`;
  try {
    const up = weft('lab', 'up', '--name', under, '--mode', 'underlay', '--nodes', '2', '--pods-per-node', '1');
    assert.equal(up.code, 0, up.out);
    assert.match(up.out, /node1 +198\.18\.0\.11 +198\.18\.1\.0\/24 +macvlan/);
    const ok = weft('verify', '--name', under);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /outside saw the client as 198\.18\.1\.\d+ \(its own IP/);
    assert.equal(spawnSync('ip', ['-n', `wl.${under}.node1`, 'link', 'del', 'weft-shim']).status, 0);
    const broken = weft('verify', '--name', under);
    assert.notEqual(broken.code, 0);
    assert.match(broken.out, /✗ tcp +node1 .* → pod-1a .*macvlan: a node reaches its own pods only through its weft-shim/);
  } finally {
    weft('lab', 'down', '--name', under);
  }
});
