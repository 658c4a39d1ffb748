import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { listNetns } from '../src/kernel/netns.js';
import type { LabState } from '../src/lab/state.js';
import { buildGraph } from '../src/ui/graph.js';
import { Topology } from '../src/topo/topology.js';
import { weft } from './lab-cli.js';

// Labs whose pods the CNI wires in routed mode (no cni0: a /32 route per pod), one per backend that
// routes pod traffic differently (udp: through the agent's flannel0 loop): every verify check passes, as on a bridge lab.

let topo: Topology;
const labs: string[] = [];

before(async () => {
  topo = await Topology.create();
});

after(async () => {
  for (const lab of labs) weft('lab', 'down', '--name', lab);
  await topo.destroy();
  assert.deepEqual(
    listNetns().filter((n) => labs.some((l) => n.startsWith(`wl.${l}.`))),
    [],
    'lab down left namespaces',
  );
});

const inNs = (ns: string, ...argv: string[]) => spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8' });

test('lab up refuses --cni-mode routed for an underlay lab (usage error, exit 2)', () => {
  const r = weft('lab', 'up', '--name', `${topo.id}u`, '--mode', 'underlay', '--cni-mode', 'routed');
  assert.equal(r.code, 2, r.out);
  assert.match(r.out, /--cni-mode routed needs an overlay lab/);
  assert.ok(!listNetns().some((n) => n.startsWith(`wl.${topo.id}u.`)), 'nothing was made');
});

// Lab names end in r + the backend's number (`u` is the underlay test's).
for (const [i, backend] of (['vxlan', 'host-gw', 'udp'] as const).entries()) {
  test(`a routed ${backend} lab: no cni0, a /32 route and static neighbour per pod, verify passes every check`, async () => {
    const lab = `${topo.id}r${i}`;
    labs.push(lab);
    const up = weft('lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '2', '--backend', backend, '--cni-mode', 'routed');
    assert.equal(up.code, 0, up.out);
    const s = JSON.parse(weft('lab', 'status', '--name', lab, '--json').stdout) as LabState;
    assert.equal(s.cniMode, 'routed', 'the lab records its CNI mode');

    const node1 = s.nodes.find((n) => n.name === 'node1')!;
    const links = inNs(node1.ns, 'ip', '-j', 'link', 'show');
    assert.ok(!(JSON.parse(links.stdout) as { ifname: string }[]).some((l) => l.ifname === 'cni0'), 'no bridge on the node');
    const routes = JSON.parse(inNs(node1.ns, 'ip', '-j', 'route', 'show').stdout) as { dst: string; dev?: string; type?: string }[];
    const neigh = JSON.parse(inNs(node1.ns, 'ip', '-j', 'neigh', 'show').stdout) as { dst: string; dev: string; state: string[] }[];
    for (const pod of s.pods.filter((p) => p.node === 'node1')) {
      const r = routes.find((x) => x.dst === pod.ip);
      assert.match(r?.dev ?? '', /^veth[0-9a-f]{8}$/, `a /32 route to ${pod.name}: ${JSON.stringify(routes)}`);
      assert.ok(
        neigh.some((n) => n.dst === pod.ip && n.dev === r!.dev && n.state.includes('PERMANENT')),
        `a static neighbour for ${pod.name}`,
      );
    }
    const subnet = node1.subnet!.replace(/\.\d+\/24$/, '.0/24');
    assert.ok(
      routes.some((x) => x.type === 'unreachable' && x.dst === subnet),
      `the rest of ${subnet} is unreachable: ${JSON.stringify(routes)}`,
    );

    const v = weft('verify', '--name', lab, '--json');
    const report = JSON.parse(v.stdout) as { passed: number; failed: number; results: { ok: boolean; group: string; check: string }[] };
    assert.equal(report.failed, 0, v.out);
    assert.equal(v.code, 0);
    for (const group of ['pod → pod, same node', 'pod → pod, across nodes', 'node → pod, other node', 'pod → Service', 'Service discovery']) {
      assert.ok(
        report.results.some((r) => r.group === group && r.ok),
        `no passing check in "${group}"`,
      );
    }
    assert.ok(
      report.results.some((r) => r.check === 'hairpin' && r.ok),
      'a pod reaches itself through its Service',
    );

    // A free address of the node's subnet is answered at once, not sent out the default route.
    const pod = s.pods.find((p) => p.node === 'node2')!;
    const free = subnet.replace(/\.0\/24$/, '.250');
    const ping = inNs(pod.ns, 'ping', '-c', '1', '-W', '2', free);
    assert.notEqual(ping.status, 0);
    assert.match(ping.stdout, /Unreachable/i, ping.stdout);

    const trace = weft('trace', '--name', lab, 'pod-2a', 'pod-1a');
    assert.equal(trace.code, 0, trace.out);
    assert.match(trace.out, /host veth, no bridge/);
    assert.doesNotMatch(trace.out, /cni0/);

    // The web view draws no cni0 but each pod's host veth, as the node's /32 routes name them.
    const g = await buildGraph(s, undefined, undefined);
    assert.equal(g.cniMode, 'routed');
    const n1 = g.nodes.find((n) => n.name === 'node1')!;
    assert.equal(n1.bridge, undefined);
    for (const pod of s.pods.filter((p) => p.node === 'node1')) assert.equal(n1.podVeths?.[pod.ip], routes.find((x) => x.dst === pod.ip)?.dev);
    weft('lab', 'down', '--name', lab);
  });
}
