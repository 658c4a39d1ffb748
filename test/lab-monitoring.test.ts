import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { listNetns, netnsPids } from '../src/kernel/netns.js';
import { promQuery } from '../src/lab/monitoring.js';
import { labDir, readState } from '../src/lab/state.js';
import { Topology } from '../src/topo/topology.js';
import { waitFor } from '../src/util/wait.js';
import { weft } from './lab-cli.js';

// `lab up --monitoring` end to end: a real Prometheus in the lab scraping the real agents, read from
// this (the root) namespace only through its unix socket.

let topo: Topology;
let lab: string;

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

const query = async (q: string) => ((await promQuery(readState(lab), `/api/v1/query?query=${encodeURIComponent(q)}`)) as { result: Sample[] }).result;

/**
 * Waits until Prometheus's active targets are exactly `nodes`' agents and `up` is 1 for each; returns
 * `up` by node. (A removed node's last `up` may linger in queries for Prometheus's 5-minute lookback
 * when its staleness marker was lost, as when Prometheus is killed, so targets decide which nodes count.)
 */
async function agentsUp(nodes: string[]): Promise<Record<string, string>> {
  return waitFor(
    async () => {
      const t = (await promQuery(readState(lab), '/api/v1/targets?state=active')) as { activeTargets: { labels: { node: string } }[] };
      if (
        t.activeTargets
          .map((x) => x.labels.node)
          .sort()
          .join() !== nodes.join()
      )
        return false;
      const up = (await query('up{job="weft-agent"}')).filter((s) => nodes.includes(s.metric.node!));
      const byNode = Object.fromEntries(up.map((s) => [s.metric.node!, s.value[1]]));
      return nodes.every((n) => byNode[n] === '1') && byNode;
    },
    { timeoutMs: 20_000, what: `up == 1 for exactly ${nodes.join(', ')}` },
  );
}

const prometheusPids = async () => {
  const pids = await netnsPids(readState(lab).monitoring!.ns);
  return pids.filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('prometheus\0'));
};

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
  const up = weft('lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '1', '--monitoring');
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /Prometheus 198\.18\.0\.3:9090 in wl\.\S+\.monitoring \(ready\)/);
});

after(async () => {
  weft('lab', 'down', '--name', lab);
  await topo.destroy();
});

test('lab up --dry-run --monitoring renders the namespace, config, processes and targets, and makes nothing', () => {
  const name = `${lab}-d`;
  const r = weft('lab', 'up', '--dry-run', '--monitoring', '--nodes', '2', '--name', name);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, new RegExp(`ip netns add wl\\.${name}\\.monitoring`));
  assert.match(r.out, /addr add 198\.18\.0\.3\/24 dev eth0/);
  assert.match(r.out, /scrape_interval: 2s/);
  assert.match(r.out, /prometheus --config\.file=\S+prometheus\.yml --storage\.tsdb\.path=\S+ .*--web\.listen-address=198\.18\.0\.3:9090 &/);
  assert.match(r.out, /forward-main\.js \S+prometheus\.sock 198\.18\.0\.3 9090 &/);
  assert.match(r.out, /weft agent --node node1 .*--metrics-listen 198\.18\.0\.11:9402/);
  assert.match(r.out, /agents\.json: \[\{"targets":\["198\.18\.0\.11:9402"\],"labels":\{"node":"node1"\}\},\{"targets":\["198\.18\.0\.12:9402"\]/);
  assert.ok(!existsSync(labDir(name)) && !listNetns().some((n) => n.includes(name)), 'the dry run made something');
});

test('--monitoring on an underlay lab is a usage error', () => {
  const r = weft('lab', 'up', '--mode', 'underlay', '--monitoring', '--name', `${lab}-u`);
  assert.equal(r.code, 2, r.out);
  assert.match(r.out, /--monitoring needs an overlay lab/);
});

test('every agent is a target and up == 1, read through promQuery from the root namespace', async () => {
  const up = await agentsUp(['node1', 'node2']);
  assert.deepEqual(up, { node1: '1', node2: '1' });
  const instances = (await query('up')).map((s) => s.metric.instance).sort();
  assert.deepEqual(instances, ['198.18.0.11:9402', '198.18.0.12:9402']);
});

test("the agents' weft_* series are scraped: each node's CNI ADD is counted", async () => {
  const adds = await waitFor(
    async () => {
      const r = await query('sum by (node) (weft_cni_request_duration_seconds_count{command="ADD"})');
      return r.length === 2 && r.every((s) => Number(s.value[1]) >= 1) && r;
    },
    { timeoutMs: 20_000, what: 'a CNI ADD counted on each node' },
  );
  assert.deepEqual(adds.map((s) => s.metric.node).sort(), ['node1', 'node2']);
  const names = (await promQuery(readState(lab), '/api/v1/label/__name__/values')) as string[];
  assert.ok(names.includes('weft_reconcile_duration_seconds_bucket'), names.join(' '));
});

test('lab status says where Prometheus is and that it scrapes every agent; --json too', async () => {
  await agentsUp(['node1', 'node2']);
  const text = weft('lab', 'status', '--name', lab);
  assert.equal(text.code, 0, text.out);
  assert.match(text.out, /Prometheus 198\.18\.0\.3:9090 in wl\.\S+\.monitoring \(ready, 2\/2 agents up\)/);
  assert.match(text.out, /curl -s --unix-socket \/run\/weft\/lab\/\S+\/monitoring\/prometheus\.sock/);
  const json = JSON.parse(weft('lab', 'status', '--name', lab, '--json').stdout) as { monitoring: Record<string, unknown> };
  assert.deepEqual(json.monitoring, {
    ns: `wl.${lab}.monitoring`,
    ip: '198.18.0.3',
    port: 9090,
    socket: `${labDir(lab)}/monitoring/prometheus.sock`,
    status: { ready: true, agents: { up: 2, total: 2 } },
  });
});

test('node add adds a target that comes up; node rm removes it', async () => {
  const add = weft('lab', 'node', 'add', 'node3', '--name', lab);
  assert.equal(add.code, 0, add.out);
  await agentsUp(['node1', 'node2', 'node3']);
  const rm = weft('lab', 'node', 'rm', 'node3', '--name', lab);
  assert.equal(rm.code, 0, rm.out);
  await waitFor(
    async () => {
      const r = (await promQuery(readState(lab), '/api/v1/targets?state=active')) as { activeTargets: { labels: { node: string } }[] };
      return (
        r.activeTargets
          .map((t) => t.labels.node)
          .sort()
          .join() === 'node1,node2'
      );
    },
    { timeoutMs: 20_000, what: 'node3 to leave the targets' },
  );
});

test('a dead Prometheus: lab status says so, lab up starts it again with its data', async () => {
  const before = Number((await query('count_over_time(up{node="node1"}[1h])'))[0]!.value[1]);
  for (const pid of await prometheusPids()) process.kill(pid, 'SIGKILL');
  await waitFor(async () => (await prometheusPids()).length === 0, { timeoutMs: 5000, what: 'Prometheus to die' });
  const status = weft('lab', 'status', '--name', lab);
  assert.match(status.out, /Prometheus 198\.18\.0\.3:9090 in \S+ is NOT answering; weft lab up --name \S+ restarts it/);
  const json = JSON.parse(weft('lab', 'status', '--name', lab, '--json').stdout) as { monitoring: { status: unknown } };
  assert.deepEqual(json.monitoring.status, { ready: false });
  await assert.rejects(query('up'), /did not answer|no JSON/);
  const up = weft('lab', 'up', '--name', lab);
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /restarted Prometheus/);
  await agentsUp(['node1', 'node2']);
  const after = Number((await query('count_over_time(up{node="node1"}[1h])'))[0]!.value[1]);
  assert.ok(after >= before, `samples before the restart are kept (${before} then ${after})`);
});

test('promQuery says what is wrong: a bad query, a lab without monitoring', async () => {
  await assert.rejects(promQuery(readState(lab), '/api/v1/query?query=up{'), /refused .*parse error/);
  const s = { ...readState(lab) };
  delete s.monitoring;
  await assert.rejects(promQuery(s, '/api/v1/query?query=up'), /runs no Prometheus; start one with: weft lab up --monitoring --name/);
});

test('lab up --monitoring on a lab that runs without it adds Prometheus, scraping its agents', async () => {
  const name = `${lab}-a`;
  const up = weft('lab', 'up', '--name', name, '--nodes', '1', '--pods-per-node', '0');
  assert.equal(up.code, 0, up.out);
  assert.equal(readState(name).monitoring, undefined);
  const add = weft('lab', 'up', '--name', name, '--monitoring');
  assert.equal(add.code, 0, add.out);
  assert.match(add.out, /✓ Prometheus in its own namespace/);
  await waitFor(() => /\(ready, 1\/1 agents up\)/.test(weft('lab', 'status', '--name', name).out), { timeoutMs: 20_000, what: `${name}'s agent to be up` });
  const down = weft('lab', 'down', '--name', name);
  assert.equal(down.code, 0, down.out);
  assert.deepEqual(
    listNetns().filter((n) => n.includes(name)),
    [],
  );
});

test('lab down stops Prometheus and its forwarder and removes the namespace, socket and data', async () => {
  const s = readState(lab);
  const pids = await netnsPids(s.monitoring!.ns);
  assert.equal(pids.length, 2, 'Prometheus and the forwarder');
  const r = weft('lab', 'down', '--name', lab);
  assert.equal(r.code, 0, r.out);
  assert.deepEqual(
    listNetns().filter((n) => n.includes(lab)),
    [],
  );
  await waitFor(() => pids.every((pid) => !existsSync(`/proc/${pid}`)), { timeoutMs: 5000, what: `processes ${pids.join(', ')} to be gone` });
  assert.ok(!existsSync(s.monitoring!.socket) && !existsSync(labDir(lab)));
});
