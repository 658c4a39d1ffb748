import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { listNetns } from '../src/kernel/netns.js';
import { controlSocket } from '../src/lab/state.js';
import { probeFrom, type Probe } from '../src/lab/workload.js';
import type { Endpoint, PodRecord, Service } from '../src/service/types.js';
import { Topology } from '../src/topo/topology.js';
import { waitFor } from '../src/util/wait.js';
import { weft } from './lab-cli.js';

// Services in the lab end to end: real agents running the service proxy, real etcd, real nft, real connections.

let topo: Topology;
let lab: string;

const json = <T>(...args: string[]): T => {
  const r = weft(...args);
  assert.equal(r.code, 0, r.out);
  return JSON.parse(r.stdout) as T;
};

function manifest(name: string, text: string): string {
  const file = join(topo.dir, name);
  writeFileSync(file, text);
  return file;
}

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
  const up = weft('lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '2');
  assert.equal(up.code, 0, up.out);
});

after(async () => {
  for (const name of [lab, `${lab}-u`]) weft('lab', 'down', '--name', name);
  await topo.destroy();
  assert.deepEqual(
    listNetns().filter((n) => n.includes(lab)),
    [],
    'lab down left namespaces',
  );
});

test('lab up labels its pods app=echo and shows the Service echo, whose endpoints are the four pods', () => {
  const status = weft('lab', 'status', '--name', lab);
  assert.match(status.out, /default\/echo +10\.\d+\.\d+\.\d+ +80\/TCP,80\/UDP +app=echo/);
  const pods = json<PodRecord[]>('lab', 'get', 'pods', '--name', lab, '-o', 'json');
  assert.deepEqual(pods.map((p) => [p.name, p.labels.app, p.namespace]).sort(), [
    ['pod-1a', 'echo', 'default'],
    ['pod-1b', 'echo', 'default'],
    ['pod-2a', 'echo', 'default'],
    ['pod-2b', 'echo', 'default'],
  ]);
  // Registered by the agents from CNI_ARGS on ADD: the IP and node the lab recorded.
  const state = json<{ pods: { name: string; ip: string; node: string }[] }>('lab', 'status', '--name', lab, '--json');
  for (const p of state.pods) {
    const rec = pods.find((r) => r.name === p.name)!;
    assert.equal(rec.ip, p.ip, `${p.name}'s registered IP`);
    assert.equal(rec.node, p.node);
    assert.equal(rec.containerID, p.name);
  }
  const eps = json<{ name: string; endpoints: Endpoint[] }[]>('lab', 'get', 'endpoints', '--name', lab, '--json');
  const echo = eps.find((e) => e.name === 'echo')!;
  assert.deepEqual(echo.endpoints.map((e) => e.ip).sort(), state.pods.map((p) => p.ip).sort());
  assert.ok(echo.endpoints.every((e) => e.conditions.ready && e.ports.length === 2));
});

test('verify passes its pod → Service checks, with evidence, and removes the Services it made', () => {
  const started = performance.now();
  const r = weft('verify', '--name', lab, '--json');
  const ms = performance.now() - started;
  const report = JSON.parse(r.stdout) as { failed: number; results: { group: string; check: string; to: string; ok: boolean; evidence: string }[] };
  assert.equal(report.failed, 0, r.out);
  assert.equal(r.code, 0);
  const svc = report.results.filter((x) => x.group === 'pod → Service');
  const by = (check: string) => svc.filter((x) => x.check === check);
  assert.match(by('tcp spread')[0]!.evidence, /reached 4 of 4 backends/);
  assert.match(by('client IP')[0]!.evidence, /its own IP: no SNAT/);
  assert.match(by('udp')[0]!.evidence, /answered on :80/);
  assert.equal(by('node → ClusterIP').length, 2);
  assert.equal(by('NodePort').length, 2);
  const local = by('ETP Local');
  assert.ok(local.some((x) => /client IP kept/.test(x.evidence)));
  assert.ok(local.some((x) => /no local endpoint and drops/.test(x.evidence)));
  assert.match(by('affinity')[0]!.evidence, /all reached pod-\w+ \(ClientIP/);
  for (const c of ['no endpoints tcp', 'no endpoints udp']) {
    const m = /refused in ([\d.]+) ms/.exec(by(c)[0]!.evidence);
    assert.ok(m && Number(m[1]) < 500, `${c}: ${by(c)[0]!.evidence}`);
  }
  assert.match(by('hairpin')[0]!.evidence, /reached itself through its Service/);
  const left = json<Service[]>('lab', 'get', 'services', '--name', lab, '-n', 'default', '-o', 'json');
  assert.deepEqual(
    left.map((x) => x.name),
    ['echo'],
    'verify left its Services behind',
  );
  // The whole verify of a 2-node lab, network model and Services together: about 5 s on an idle
  // 2-CPU machine, 30 s at a load average of 14 there.
  assert.ok(ms < 60_000, `verify took ${ms} ms`);
});

const WEB = `
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  nodeName: node2
  containers:
  - name: web
    ports:
    - {name: http-alt, containerPort: 8080}
    - {name: dns, containerPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: web
    ports: [{name: http-alt, containerPort: 8081}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-alt}
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http-alt}]
`;

test('lab apply makes pods through CNI on their node, listening on their containerPorts, behind Services with named targetPorts; delete removes them', async () => {
  const file = manifest('web.yaml', WEB);
  const apply = weft('lab', 'apply', '-f', file, '--name', lab);
  assert.equal(apply.code, 0, apply.out);
  assert.match(apply.out, /^pod\/web-1 created on node2 with IP 10\.244\./m);
  // No nodeName: the node with the fewest pods (node1 has 2, node2 3 with web-1).
  assert.match(apply.out, /^pod\/web-2 in shop created on node1 with IP/m);
  assert.match(apply.out, /^service\/web created$/m);
  assert.match(apply.out, /^service\/web in shop created$/m);
  assert.match(weft('lab', 'apply', '-f', file, '--name', lab).out, /^service\/web unchanged$/m);

  const pods = json<PodRecord[]>('lab', 'get', 'pods', '--name', lab, '-n', 'shop', '-o', 'json');
  assert.deepEqual(
    pods.map((p) => [p.namespace, p.name, p.node, p.ports.map((x) => x.containerPort)]),
    [['shop', 'web-2', 'node1', [8081]]],
  );
  const services = json<Service[]>('lab', 'get', 'services', '--name', lab, '-o', 'json');
  const web = services.find((x) => x.namespace === 'default' && x.name === 'web')!;
  const shop = services.find((x) => x.namespace === 'shop')!;
  const eps = json<{ namespace: string; name: string; endpoints: Endpoint[] }[]>('lab', 'get', 'endpoints', '--name', lab, '-o', 'json');
  const webEps = eps.find((e) => e.namespace === 'default' && e.name === 'web')!.endpoints;
  assert.deepEqual(
    webEps.map((e) => e.ports.map((p) => `${p.name}:${p.port}/${p.protocol}`).sort()),
    [['dns:5353/UDP', 'http:8080/TCP']],
  );

  const client = controlSocket(lab, 'pod-1a', 'app');
  const waitAnswer = async (probe: Probe, socket = client) => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await probeFrom(socket, probe);
      if (r.ok || Date.now() > deadline) return r;
      await new Promise((res) => setTimeout(res, 200));
    }
  };
  const tcp = await waitAnswer({ proto: 'tcp', host: web.clusterIP!, port: 80 });
  assert.ok(tcp.ok && tcp.seen.pod === 'web-1' && tcp.seen.port === 8080, JSON.stringify(tcp));
  const udp = await waitAnswer({ proto: 'udp', host: web.clusterIP!, port: 53 });
  assert.ok(udp.ok && udp.seen.pod === 'web-1' && udp.seen.port === 5353, JSON.stringify(udp));
  const node2 = '198.18.0.12';
  const np = await waitAnswer({ proto: 'tcp', host: node2, port: shop.ports[0]!.nodePort! }, controlSocket(lab, 'outside', 'app'));
  assert.ok(np.ok && np.seen.pod === 'web-2' && np.seen.port === 8081, JSON.stringify(np));

  const del = weft('lab', 'delete', '-f', file, '--name', lab);
  assert.equal(del.code, 0, del.out);
  assert.match(del.out, /^pod\/web-1 deleted$/m);
  assert.match(del.out, /^service\/web in shop deleted$/m);
  assert.ok(!listNetns().includes(`wl.${lab}.web-1`), 'pod namespace left behind');
  assert.deepEqual(json<PodRecord[]>('lab', 'get', 'pods', '--name', lab, '-n', 'shop', '--json'), [], 'pod record left behind');
  await waitFor(async () => !(await probeFrom(client, { proto: 'tcp', host: web.clusterIP!, port: 80, timeoutMs: 500 })).ok, {
    timeoutMs: 15_000,
    what: 'the deleted Service to stop answering',
  });
  assert.match(weft('lab', 'delete', '-f', file, '--name', lab).out, /^service\/web not found$/m);
});

test('an invalid manifest is refused whole: the error names the document and field, nothing is made', () => {
  const file = manifest('bad.yaml', `${WEB}---\napiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  ports: [{port: 70000}]\n`);
  const r = weft('lab', 'apply', '-f', file, '--name', lab);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /document 5 .*spec\.ports\[0\]\.port/);
  assert.match(r.out, /nothing was applied/);
  assert.ok(!listNetns().includes(`wl.${lab}.web-1`));
  const names = json<Service[]>('lab', 'get', 'services', '--name', lab, '-n', 'default', '--json').map((x) => x.name);
  assert.deepEqual(names, ['echo']);
  const missing = weft('lab', 'apply', '-f', join(topo.dir, 'nope.yaml'), '--name', lab);
  assert.equal(missing.code, 2, missing.out);
});

test('underlay mode: verify says Services and their DNS are not available there, and lab apply refuses', () => {
  const under = `${lab}-u`;
  const up = weft('lab', 'up', '--name', under, '--mode', 'underlay', '--nodes', '1', '--pods-per-node', '2');
  assert.equal(up.code, 0, up.out);
  assert.doesNotMatch(up.out, /echo/);
  const v = weft('verify', '--name', under);
  assert.equal(v.code, 0, v.out);
  assert.match(v.out, /pod → Service\n +- services +verify → the lab +not available in underlay mode/);
  assert.match(v.out, /Service discovery\n +- dns +verify → the lab +not available in underlay mode/);
  assert.match(v.out, /2 not applicable/);
  const apply = weft('lab', 'apply', '-f', manifest('web2.yaml', WEB), '--name', under);
  assert.equal(apply.code, 1);
  assert.match(apply.out, /underlay mode: it has no etcd and no agents, so no Services/);
});
