import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, before, test, type TestContext } from 'node:test';
import { listNetns } from '../src/kernel/netns.js';
import { Topology } from '../src/topo/topology.js';
import { waitFor } from '../src/util/wait.js';
import { WEFT, weft } from './lab-cli.js';

/**
 * The lab never loses track: concurrent adds, interrupted and failing adds, bad names, long names,
 * processes that die. Every check reads the kernel and etcd directly (ip, curl), not the lab's state.
 */
const ROOT = '/run/weft/lab';

let topo: Topology;
let lab: string;

function start(...args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> } {
  const child = spawn(process.execPath, [WEFT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, out })),
  );
  return { child, done };
}

interface State {
  nodes: { name: string; ip: string; port: string; subnet?: string; pending?: true }[];
  pods: { name: string; node: string; ip: string; pending?: true }[];
}
const state = (name = lab) => JSON.parse(readFileSync(`${ROOT}/${name}/state.json`, 'utf8')) as State;
const ns = (role: string, name = lab) => `wl.${name}.${role}`;
const pids = (n: string) => spawnSync('ip', ['netns', 'pids', n], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
const veths = (node: string) =>
  spawnSync('ip', ['-n', ns(node), '-o', 'link', 'show', 'type', 'veth'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean).length;
const reserved = (node: string) => readdirSync(`${ROOT}/${lab}/nodes/${node}/ipam/weft`).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
const labNamespaces = (name = lab) => listNetns().filter((n) => n.startsWith(`wl.${name}.`));

/** The subnet leases etcd holds, read with etcd's JSON gateway from inside the lab's etcd namespace. */
function leases(): { key: string; publicIP: string }[] {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const body = JSON.stringify({ key: b64('/coreos.com/network/subnets/'), range_end: b64('/coreos.com/network/subnets0') });
  const r = spawnSync('ip', ['netns', 'exec', ns('etcd'), 'curl', '-sS', '-m', '3', '-X', 'POST', '-d', body, 'http://198.18.0.2:2379/v3/kv/range'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const kvs = (JSON.parse(r.stdout) as { kvs?: { key: string; value: string }[] }).kvs ?? [];
  return kvs.map((kv) => ({
    key: Buffer.from(kv.key, 'base64').toString(),
    publicIP: (JSON.parse(Buffer.from(kv.value, 'base64').toString()) as { PublicIP: string }).PublicIP,
  }));
}

function putNetworkConfig(config: string): void {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const r = spawnSync(
    'ip',
    [
      'netns',
      'exec',
      ns('etcd'),
      'curl',
      '-sS',
      '-m',
      '3',
      '-X',
      'POST',
      '-d',
      JSON.stringify({ key: b64('/coreos.com/network/config'), value: b64(config) }),
      'http://198.18.0.2:2379/v3/kv/put',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
}

/** After a node add that did not complete: nothing of `node` anywhere. */
function assertNoNode(node: string, ip: string | undefined): void {
  assert.ok(!listNetns().includes(ns(node)), `namespace of ${node} left behind`);
  assert.ok(!existsSync(`${ROOT}/${lab}/nodes/${node}`), `files of ${node} left behind`);
  assert.ok(!state().nodes.some((n) => n.name === node), `${node} still in the lab's state`);
  const running = spawnSync('pgrep', ['-f', `agent --node ${node} .*${ROOT}/${lab}/nodes/${node}/`], { encoding: 'utf8' }).stdout.trim();
  assert.equal(running, '', `an agent for ${node} still runs`);
  if (ip)
    assert.deepEqual(
      leases().filter((l) => l.publicIP === ip),
      [],
      `a lease for ${ip} is left in etcd`,
    );
}

/** After a pod add that did not complete, or a pod rm: nothing of `pod` anywhere. */
function assertNoPod(pod: string, node: string, vethsBefore: number, reservedBefore: string[]): void {
  assert.ok(!listNetns().includes(ns(pod)), `namespace of ${pod} left behind`);
  assert.equal(veths(node), vethsBefore, `a host veth of ${pod} is left on ${node}`);
  assert.deepEqual(reserved(node), reservedBefore, `an IP reservation of ${pod} is left on ${node}`);
  assert.ok(!state().pods.some((p) => p.name === pod), `${pod} still in the lab's state`);
  // Its node's runtime removes a pod's probe sockets when it closes the pod's sockets.
  assert.ok(!existsSync(`${ROOT}/${lab}/pods/${pod}`), `the containers of ${pod} (their probe sockets) are left behind`);
}

/** Whatever a failed test left of these pods and nodes goes, so the next test starts from the same lab. */
function leaveNoTrace(t: TestContext, pods: string[], nodes: string[] = []): void {
  t.after(() => {
    const s = state();
    for (const p of pods) if (s.pods.some((x) => x.name === p)) weft('lab', 'pod', 'rm', p, '--name', lab);
    for (const n of nodes) if (s.nodes.some((x) => x.name === n)) weft('lab', 'node', 'rm', n, '--name', lab);
  });
}

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
  const up = weft('lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '1');
  assert.equal(up.code, 0, up.out);
});

after(async () => {
  weft('lab', 'down', '--name', lab);
  await topo.destroy();
  assert.equal(labNamespaces().length, 0, 'lab down left namespaces');
});

test('bad node and pod names are refused before anything is made', () => {
  const before = { ns: labNamespaces().sort(), state: JSON.stringify(state()), escaped: existsSync(`${ROOT}/x`) };
  for (const name of ['../../x', 'a b', 'Node3', 'underlay', 'etcd', 'abcdefghijklmnopq', 'n-', 'pod-1a']) {
    const r = weft('lab', 'node', 'add', name, '--name', lab);
    assert.notEqual(r.code, 0, `node name "${name}" was accepted`);
    assert.match(r.out, /invalid|taken by the lab|already exists/, r.out);
  }
  for (const name of ['../x', 'A B', 'outside', 'node1', 'pod-1a']) {
    const r = weft('lab', 'pod', 'add', name, '--node', 'node1', '--name', lab);
    assert.notEqual(r.code, 0, `pod name "${name}" was accepted`);
    assert.match(r.out, /invalid|taken by the lab|already exists/, r.out);
  }
  assert.deepEqual(labNamespaces().sort(), before.ns, 'a refused name made a namespace');
  assert.equal(JSON.stringify(state()), before.state, 'a refused name changed the state');
  assert.equal(existsSync(`${ROOT}/x`), before.escaped, 'a node name escaped the lab directory');
});

test('two 16-character node names get their own switch ports and both work', () => {
  const names = ['abcdefghijklmn-1', 'abcdefghijklmn-2'];
  const ports = () =>
    spawnSync('ip', ['-n', ns('underlay'), '-o', 'link', 'show', 'master', 'br0'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter(Boolean).length;
  const portsBefore = ports();
  try {
    for (const n of names) {
      const r = weft('lab', 'node', 'add', n, '--name', lab);
      assert.equal(r.code, 0, r.out);
    }
    const [a, b] = names.map((n) => state().nodes.find((x) => x.name === n)!);
    assert.notEqual(a!.port, b!.port);
    assert.equal(ports(), portsBefore + 2, 'the two nodes do not have a switch port each');
    assert.notEqual(a!.subnet, b!.subnet);
    const ping = weft('lab', 'exec', '--name', lab, names[0]!, '--', 'ping', '-c', '1', '-W', '2', names[1]!);
    assert.equal(ping.code, 0, ping.out);
  } finally {
    for (const n of names) weft('lab', 'node', 'rm', n, '--name', lab);
  }
  assert.equal(ports(), portsBefore);
});

test('30 concurrent pod adds are all recorded, get distinct IPs, and are all removable', async (t) => {
  const pods = Array.from({ length: 30 }, (_, i) => `many-${i}`);
  leaveNoTrace(t, pods);
  const [v1, v2, r1, r2] = [veths('node1'), veths('node2'), reserved('node1'), reserved('node2')];
  const adds = await Promise.all(pods.map((p, i) => start('lab', 'pod', 'add', p, '--node', `node${(i % 2) + 1}`, '--name', lab).done));
  for (const [i, r] of adds.entries()) assert.equal(r.code, 0, `${pods[i]}: ${r.out}`);
  const recorded = state().pods.filter((p) => p.name.startsWith('many-'));
  assert.deepEqual(recorded.map((p) => p.name).sort(), [...pods].sort(), 'pods missing from the state');
  assert.ok(
    recorded.every((p) => !p.pending && p.ip),
    'a pod is recorded without its IP',
  );
  assert.equal(new Set(recorded.map((p) => p.ip)).size, 30, 'two pods share an IP');
  const reach = weft('lab', 'exec', '--name', lab, 'many-0', '--', 'ping', '-c', '1', '-W', '2', 'many-29');
  assert.equal(reach.code, 0, reach.out);

  const rms = await Promise.all(pods.map((p) => start('lab', 'pod', 'rm', p, '--name', lab).done));
  for (const [i, r] of rms.entries()) assert.equal(r.code, 0, `${pods[i]}: ${r.out}`);
  assert.deepEqual(
    state().pods.filter((p) => p.name.startsWith('many-')),
    [],
  );
  assert.deepEqual(
    labNamespaces().filter((n) => n.includes('.many-')),
    [],
  );
  assert.equal(veths('node1'), v1);
  assert.equal(veths('node2'), v2);
  assert.deepEqual(reserved('node1'), r1);
  assert.deepEqual(reserved('node2'), r2);
});

test('a pod add interrupted by SIGTERM removes what it made', async (t) => {
  leaveNoTrace(t, ['term']);
  const [v, r] = [veths('node1'), reserved('node1')];
  const add = start('lab', 'pod', 'add', 'term', '--node', 'node1', '--name', lab);
  await waitFor(() => listNetns().includes(ns('term')), { timeoutMs: 30_000, intervalMs: 10, what: 'the pod namespace' });
  add.child.kill('SIGTERM');
  const done = await add.done;
  assert.notEqual(done.code, 0, done.out);
  assertNoPod('term', 'node1', v, r);
  const again = weft('lab', 'pod', 'add', 'term', '--node', 'node1', '--name', lab);
  assert.equal(again.code, 0, `the name is not free again: ${again.out}`);
  assert.equal(weft('lab', 'pod', 'rm', 'term', '--name', lab).code, 0);
});

test('a pod add killed with SIGKILL leaves a record that pod rm cleans', async (t) => {
  leaveNoTrace(t, ['killed']);
  const [v, r] = [veths('node2'), reserved('node2')];
  const add = start('lab', 'pod', 'add', 'killed', '--node', 'node2', '--name', lab);
  try {
    // Once a container runs, the namespace, the IP and the veth all exist.
    await waitFor(() => existsSync(`${ROOT}/${lab}/pods/killed/app.sock`), {
      timeoutMs: 30_000,
      intervalMs: 10,
      what: "the pod's first container",
    });
    add.child.kill('SIGKILL');
    await add.done;
    assert.ok(
      state().pods.some((p) => p.name === 'killed'),
      'the killed add left no record of what it made',
    );
    assert.match(weft('lab', 'pod', 'add', 'killed', '--node', 'node2', '--name', lab).out, /interrupted|already exists/);
    const rm = weft('lab', 'pod', 'rm', 'killed', '--name', lab);
    assert.equal(rm.code, 0, rm.out);
    assertNoPod('killed', 'node2', v, r);
  } finally {
    add.child.kill('SIGKILL');
  }
});

test('a node add whose agent fails leaves no agent, lease, namespace or record', (t) => {
  leaveNoTrace(t, [], ['failing']);
  putNetworkConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'nonsense' } }));
  try {
    const r = weft('lab', 'node', 'add', 'failing', '--name', lab);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /agent on failing/);
  } finally {
    putNetworkConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
  }
  assertNoNode('failing', '198.18.0.13');
});

test('a node add interrupted by SIGTERM leaves no agent, lease, namespace or record', async (t) => {
  leaveNoTrace(t, [], ['term']);
  const add = start('lab', 'node', 'add', 'term', '--name', lab);
  await waitFor(() => listNetns().includes(ns('term')), { timeoutMs: 30_000, intervalMs: 10, what: 'the node namespace' });
  add.child.kill('SIGTERM');
  const done = await add.done;
  assert.notEqual(done.code, 0, done.out);
  assertNoNode('term', '198.18.0.13');
});

test('a node add killed with SIGKILL leaves a record that node rm cleans, lease and agent included', async (t) => {
  leaveNoTrace(t, [], ['killed']);
  const add = start('lab', 'node', 'add', 'killed', '--name', lab);
  try {
    await waitFor(() => spawnSync('pgrep', ['-f', `agent --node killed .*${ROOT}/${lab}/nodes/killed/`], { encoding: 'utf8' }).stdout.trim() !== '', {
      timeoutMs: 30_000,
      intervalMs: 10,
      what: "the node's agent",
    });
    add.child.kill('SIGKILL');
    await add.done;
    const node = state().nodes.find((n) => n.name === 'killed');
    assert.ok(node, 'the killed add left no record of what it made');
    // The agent outlives the command that started it and takes its lease.
    await waitFor(() => leases().some((l) => l.publicIP === node.ip), { timeoutMs: 30_000, intervalMs: 200, what: "the orphaned agent's lease" });
    const rm = weft('lab', 'node', 'rm', 'killed', '--name', lab);
    assert.equal(rm.code, 0, rm.out);
    assertNoNode('killed', node.ip);
  } finally {
    add.child.kill('SIGKILL');
  }
});

test('verify reports dead agents and half-made pods; lab up removes those and brings every process back with the same subnets', async (t) => {
  leaveNoTrace(t, ['half']);
  const subnets = state().nodes.map((n) => `${n.name} ${n.subnet}`);
  for (const n of ['node1', 'node2']) for (const pid of pids(ns(n))) process.kill(Number(pid), 'SIGKILL');
  await waitFor(() => pids(ns('node1')).length === 0 && pids(ns('node2')).length === 0, { timeoutMs: 30_000, intervalMs: 10, what: 'the agents to die' });
  const dead = weft('verify', '--name', lab, '--json');
  assert.equal(dead.code, 1, dead.out);
  const report = JSON.parse(dead.stdout) as { results: { group: string; check: string; to: string; ok: boolean; evidence: string }[] };
  const cp = report.results.filter((r) => r.group === 'control plane');
  assert.ok(
    cp.some((r) => r.check === 'agent' && r.to.startsWith('node1') && !r.ok),
    "verify did not report node1's dead agent",
  );
  assert.ok(
    cp.some((r) => !r.ok && /nothing manages the network/.test(r.evidence)),
    'verify did not say that nothing manages the network',
  );
  assert.ok(
    report.results.some((r) => r.group === 'pod → pod, across nodes' && r.ok),
    'the data-plane checks were not reported',
  );

  // A pod add killed half way leaves a pending record; verify names it, and up removes it.
  const half = start('lab', 'pod', 'add', 'half', '--node', 'node1', '--name', lab);
  await waitFor(() => listNetns().includes(ns('half')), { timeoutMs: 30_000, intervalMs: 10, what: "the half-made pod's namespace" });
  half.child.kill('SIGKILL');
  await half.done;
  assert.ok(state().pods.find((p) => p.name === 'half')?.pending, 'the killed add left no pending record');
  assert.match(weft('verify', '--name', lab).out, /✗ record +pod half → lab state +left half made by an interrupted command/);

  // Now everything: etcd, agents, pod containers, the outside world.
  for (const n of labNamespaces()) for (const pid of pids(n)) process.kill(Number(pid), 'SIGKILL');
  await waitFor(() => labNamespaces().every((n) => pids(n).length === 0), { timeoutMs: 30_000, intervalMs: 10, what: 'every process of the lab to die' });
  const up = weft('lab', 'up', '--name', lab);
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /restarted etcd with its data/);
  assert.match(up.out, /removed what interrupted commands left half made \(half\)/);
  assert.ok(!listNetns().includes(ns('half')) && !state().pods.some((p) => p.name === 'half'), 'the half-made pod is still there');
  assert.match(up.out, /restarted the agents on node1, node2 \(same subnets\)/);
  assert.deepEqual(
    state().nodes.map((n) => `${n.name} ${n.subnet}`),
    subnets,
  );
  const v = weft('verify', '--name', lab);
  assert.equal(v.code, 0, v.out);
  assert.match(weft('lab', 'up', '--name', lab).out, /nothing to restart/);
});

test('lab up --dry-run changes nothing; lab up with its stdout closed finishes; an interrupted lab up removes everything it made', async () => {
  const other = `${lab}-i`;
  const dry = weft('lab', 'up', '--name', other, '--nodes', '2', '--dry-run');
  assert.equal(dry.code, 0, dry.out);
  assert.match(dry.out, /ip netns add wl\.\S+-i\.node2/);
  assert.match(dry.out, /link add name port2 type veth peer name eth0/);
  assert.match(dry.out, /weft agent --node node1 /);
  assert.deepEqual(labNamespaces(other), []);
  assert.ok(!existsSync(`${ROOT}/${other}`), 'the dry run made the lab directory');

  // As `lab up | head -2`: the reader goes away, and the lab is still made completely.
  const piped = spawn(process.execPath, [WEFT, 'lab', 'up', '--name', other, '--nodes', '1', '--pods-per-node', '1'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let lines = 0;
  piped.stdout.on('data', (d: Buffer) => {
    lines += d.toString().split('\n').length - 1;
    if (lines >= 2) piped.stdout.destroy();
  });
  const code = await new Promise((resolve) => piped.on('close', (c) => resolve(c)));
  try {
    assert.equal(code, 0, 'lab up failed when its stdout closed');
    const made = state(other);
    assert.equal(made.nodes.length, 1);
    assert.equal(made.pods.length, 1);
    assert.ok([...made.nodes, ...made.pods].every((x) => !x.pending) && !('building' in made), 'the lab was left half made');
  } finally {
    assert.equal(weft('lab', 'down', '--name', other).code, 0);
  }

  const up = start('lab', 'up', '--name', other, '--nodes', '2', '--pods-per-node', '1');
  await waitFor(() => listNetns().includes(ns('node1', other)), { timeoutMs: 60_000, intervalMs: 10, what: 'the first node' });
  up.child.kill('SIGTERM');
  const done = await up.done;
  assert.notEqual(done.code, 0, done.out);
  assert.deepEqual(labNamespaces(other), [], 'the interrupted up left namespaces');
  assert.ok(!existsSync(`${ROOT}/${other}`), 'the interrupted up left its directory');
});
