import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { AgentStatus } from '../src/agent/status.js';
import { listNetns } from '../src/kernel/netns.js';
import type { LabState } from '../src/lab/state.js';
import { Topology } from '../src/topo/topology.js';
import { waitFor } from '../src/util/wait.js';

/**
 * A lab on a 3-member etcd cluster (`lab up --etcd-members 3`) losing members: one of three (the
 * cluster goes on: nodes join, Services change), two of three (no quorum: writes stop, the agents
 * say so, pod traffic goes on), and all of them back. Members are killed with SIGKILL inside their
 * own namespaces; every check reads the kernel, etcd (curl on its JSON gateway) or the agents.
 */
const WEFT = fileURLToPath(new URL('../../bin/weft', import.meta.url));
const ROOT = '/run/weft/lab';

let topo: Topology;
let lab: string;

function weft(...args: string[]) {
  const r = spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? 1, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
}

const state = () => JSON.parse(readFileSync(`${ROOT}/${lab}/state.json`, 'utf8')) as LabState;
const ns = (role: string) => `wl.${lab}.${role}`;
const pids = (n: string) => spawnSync('ip', ['netns', 'pids', n], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
const MEMBERS = [
  { role: 'etcd', url: 'http://198.18.0.2:2379' },
  { role: 'etcd2', url: 'http://198.18.0.4:2379' },
  { role: 'etcd3', url: 'http://198.18.0.5:2379' },
];

function kill(role: string): void {
  const running = pids(ns(role));
  assert.ok(running.length > 0, `etcd member ${role} runs`);
  for (const pid of running) process.kill(Number(pid), 'SIGKILL');
}

/** etcd's JSON gateway at `url`, from the namespace of a member that is still running. */
function gateway(url: string, path: string, body: unknown): { ok: boolean; json?: Record<string, unknown> } {
  const from = MEMBERS.find((m) => pids(ns(m.role)).length > 0)?.role ?? 'etcd';
  const r = spawnSync('ip', ['netns', 'exec', ns(from), 'curl', '-sS', '-m', '3', '-X', 'POST', '-d', JSON.stringify(body), `${url}${path}`], {
    encoding: 'utf8',
  });
  if (r.status !== 0) return { ok: false };
  return { ok: true, json: JSON.parse(r.stdout) as Record<string, unknown> };
}

/** The subnet leases, as the first member that answers has them. */
function leases(): { key: string; publicIP: string; lease: string }[] {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  for (const m of MEMBERS) {
    const r = gateway(m.url, '/v3/kv/range', { key: b64('/coreos.com/network/subnets/'), range_end: b64('/coreos.com/network/subnets0') });
    if (!r.ok || !r.json?.header) continue;
    const kvs = (r.json.kvs ?? []) as { key: string; value: string; lease?: string }[];
    return kvs.map((kv) => ({
      key: Buffer.from(kv.key, 'base64').toString(),
      publicIP: (JSON.parse(Buffer.from(kv.value, 'base64').toString()) as { PublicIP: string }).PublicIP,
      lease: kv.lease ?? '0',
    }));
  }
  throw new Error('no etcd member answered a range');
}

function agentStatus(node: string): { json: AgentStatus; text: string } {
  const dir = `${ROOT}/${lab}/nodes/${node}`;
  const j = weft('agent', 'status', '--state-dir', dir, '--json');
  assert.equal(j.code, 0, j.out);
  return { json: JSON.parse(j.stdout) as AgentStatus, text: weft('agent', 'status', '--state-dir', dir).out };
}

/** Pings from a pod for `seconds` in the background; resolves to ping's summary. */
function pingFor(from: string, to: string, seconds: number): Promise<{ sent: number; received: number; out: string }> {
  const count = String(seconds * 10);
  const child = spawn('ip', ['netns', 'exec', ns(from), 'ping', '-n', '-c', count, '-i', '0.1', '-W', '1', to], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) =>
    child.on('close', () => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
      resolve({ sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0), out });
    }),
  );
}

function service(name: string): string {
  const file = join(topo.dir, `${name}.yaml`);
  writeFileSync(file, `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}}\nspec:\n  selector: {app: echo}\n  ports: [{port: 8080, targetPort: 80}]\n`);
  return file;
}

let before1: { key: string; publicIP: string; lease: string }[];

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
  const up = weft('lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '1', '--etcd-members', '3');
  assert.equal(up.code, 0, up.out);
});

after(async () => {
  weft('lab', 'down', '--name', lab);
  await topo.destroy();
  assert.deepEqual(
    listNetns().filter((n) => n.includes(lab)),
    [],
    'lab down left namespaces',
  );
});

test('lab up --etcd-members 3: one cluster of three members, each in its namespace; every agent has every client URL', () => {
  const s = state();
  assert.deepEqual(
    s.etcd.members?.map((m) => [m.name, m.ns, m.ip]),
    [
      ['etcd', ns('etcd'), '198.18.0.2'],
      ['etcd2', ns('etcd2'), '198.18.0.4'],
      ['etcd3', ns('etcd3'), '198.18.0.5'],
    ],
  );
  assert.equal(s.etcd.endpoint, MEMBERS.map((m) => m.url).join(','));
  for (const m of MEMBERS) {
    assert.ok(pids(ns(m.role)).length > 0, `${m.role} runs in its namespace`);
    const list = gateway(m.url, '/v3/cluster/member/list', {});
    assert.ok(list.ok, `${m.role} answers`);
    assert.deepEqual(((list.json!.members ?? []) as { name: string }[]).map((x) => x.name).sort(), ['etcd', 'etcd2', 'etcd3']);
  }
  for (const node of ['node1', 'node2']) {
    const cmdline = readFileSync(`/proc/${pids(ns(node))[0]}/cmdline`, 'utf8').split('\0');
    assert.equal(cmdline[cmdline.indexOf('--etcd-endpoints') + 1], s.etcd.endpoint, `${node}'s agent is given every member`);
  }
  before1 = leases();
  assert.equal(before1.length, 2);
});

test('one member of three killed (the one the lab tools run beside): pod traffic unaffected, a node joins, a Service is applied', async () => {
  const s = state();
  const pod2 = s.pods.find((p) => p.name === 'pod-2a')!;
  const ping = pingFor('pod-1a', pod2.ip, 12);
  await new Promise((r) => setTimeout(r, 1000));
  kill('etcd');
  const join = weft('lab', 'node', 'add', 'node3', '--name', lab);
  assert.equal(join.code, 0, join.out);
  const applied = weft('lab', 'apply', '-f', service('one-down'), '--name', lab);
  assert.equal(applied.code, 0, applied.out);
  assert.match(applied.out, /service\/one-down created/);
  const r = await ping;
  assert.ok(r.sent >= 100, r.out);
  assert.equal(r.received, r.sent, `no ping lost while a member died and a node joined:\n${r.out}`);
  const l = leases();
  assert.equal(l.length, 3);
  assert.equal(new Set(l.map((x) => x.publicIP)).size, 3);
  for (const node of ['node1', 'node2', 'node3']) assert.equal(agentStatus(node).json.store.noQuorum, undefined, `${node} sees a quorum`);
});

test('two members of three killed: writes stop, pod traffic goes on, every agent says etcd has no quorum', async () => {
  const s = state();
  const pod2 = s.pods.find((p) => p.name === 'pod-2a')!;
  const ping = pingFor('pod-1a', pod2.ip, 8);
  kill('etcd2');
  await waitFor(() => ['node1', 'node2', 'node3'].every((n) => agentStatus(n).json.store.noQuorum !== undefined), {
    timeoutMs: 30_000,
    intervalMs: 1000,
    what: 'every agent to report no quorum',
  });
  const text = agentStatus('node1').text;
  assert.match(text, /^etcd: NO QUORUM since \S+: 1 of 3 members answer \(http:\/\/198\.18\.0\.5:2379\) and none has a leader/m);
  assert.equal(agentStatus('node1').json.store.healthy, false);
  const applied = weft('lab', 'apply', '-f', service('no-quorum'), '--name', lab);
  assert.notEqual(applied.code, 0, `a Service cannot be written without a quorum:\n${applied.out}`);
  const r = await ping;
  assert.equal(r.received, r.sent, `no ping lost without a quorum:\n${r.out}`);
  // The Service data path too: the ClusterIP of the Service applied with one member down.
  const echo = s.service!.clusterIP;
  const curl = spawnSync('ip', ['netns', 'exec', ns('pod-1a'), 'curl', '-sS', '-m', '3', `http://${echo}/`], { encoding: 'utf8' });
  assert.equal(curl.status, 0, `the Service echo answers without a quorum: ${curl.stderr}`);
});

test('both members back (lab up): the cluster converges, verify passes, no lease was lost or duplicated', async () => {
  const revived = weft('lab', 'up', '--name', lab);
  assert.equal(revived.code, 0, revived.out);
  assert.match(revived.out, /restarted etcd members etcd, etcd2 with their data/);
  await waitFor(
    () =>
      ['node1', 'node2', 'node3'].every((n) => {
        const st = agentStatus(n).json.store;
        return st.healthy && st.noQuorum === undefined;
      }),
    { timeoutMs: 30_000, intervalMs: 1000, what: 'every agent to see etcd healthy again' },
  );
  const l = leases();
  assert.equal(l.length, 3, JSON.stringify(l));
  assert.equal(new Set(l.map((x) => x.publicIP)).size, 3, 'one lease per node');
  for (const b of before1) {
    const now = l.find((x) => x.key === b.key);
    assert.ok(now, `${b.key} is still there`);
    assert.equal(now.publicIP, b.publicIP);
  }
  const s = state();
  // subnet.env's FLANNEL_SUBNET is the node's bridge address (10.244.3.1/24); its lease key is the network (subnets/10.244.3.0-24).
  for (const n of s.nodes) {
    const key = `/coreos.com/network/subnets/${n.subnet!.replace(/\.\d+\/(\d+)$/, '.0-$1')}`;
    assert.ok(
      l.some((x) => x.key === key && x.publicIP === n.ip),
      `${n.name}'s lease ${key} is its own`,
    );
  }
  for (const m of MEMBERS) assert.ok(gateway(m.url, '/v3/kv/range', { key: Buffer.from('x').toString('base64') }).ok, `${m.role} answers again`);
  const applied = weft('lab', 'apply', '-f', service('all-back'), '--name', lab);
  assert.equal(applied.code, 0, applied.out);
  const v = weft('verify', '--name', lab);
  assert.equal(v.code, 0, v.out);
  assert.match(v.out, /\d+ passed, 0 failed/);
});
