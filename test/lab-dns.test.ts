import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { listNetns } from '../src/kernel/netns.js';
import { ETC_NETNS } from '../src/lab/resolv.js';
import { nodeDir } from '../src/lab/state.js';
import type { Service } from '../src/service/types.js';
import { Topology } from '../src/topo/topology.js';
import { weft } from './lab-cli.js';

// Cluster DNS in the lab end to end: real agents serving it node-locally, real etcd, the real glibc stub in pods.

let topo: Topology;
let lab: string;

const json = <T>(...args: string[]): T => {
  const r = weft(...args);
  assert.equal(r.code, 0, r.out);
  return JSON.parse(r.stdout) as T;
};
const exec = (where: string, ...argv: string[]) => weft('lab', 'exec', '--name', lab, where, '--', ...argv);
const ns = (name: string) => `wl.${lab}.${name}`;
const netnsExec = (name: string, ...argv: string[]) => spawnSync('ip', ['netns', 'exec', ns(name), ...argv], { encoding: 'utf8', timeout: 20_000 });

function manifest(name: string, docs: object[]): string {
  const file = join(topo.dir, name);
  writeFileSync(file, docs.map((d) => JSON.stringify(d)).join('\n---\n'));
  return file;
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
  assert.deepEqual(
    listNetns().filter((n) => n.includes(lab)),
    [],
    'lab down left namespaces',
  );
  assert.deepEqual(
    existsSync(ETC_NETNS)
      ? spawnSync('ls', [ETC_NETNS], { encoding: 'utf8' })
          .stdout.split('\n')
          .filter((n) => n.includes(lab))
      : [],
    [],
    'lab down left resolv.conf files',
  );
});

test("lab up: kube-system/kube-dns at 10.96.0.10; every node holds 10.96.0.10/32 on weft-dns and the notrack rules in ip weft's raw chains; every pod has its CNI resolv.conf", () => {
  const services = json<Service[]>('lab', 'get', 'services', '--name', lab, '-n', 'kube-system', '-o', 'json');
  const dns = services.find((s) => s.name === 'kube-dns')!;
  assert.equal(dns.clusterIP, '10.96.0.10');
  assert.deepEqual(
    dns.ports.map((p) => `${p.name} ${p.port}/${p.protocol}`),
    ['dns 53/UDP', 'dns-tcp 53/TCP'],
  );
  for (const node of ['node1', 'node2']) {
    const addr = spawnSync('ip', ['-n', ns(node), '-4', '-o', 'addr', 'show', 'dev', 'weft-dns'], { encoding: 'utf8' });
    assert.match(addr.stdout, /inet 10\.96\.0\.10\/32 /, `${node}: ${addr.stdout}${addr.stderr}`);
    const pre = netnsExec(node, 'nft', 'list', 'chain', 'ip', 'weft', 'raw-prerouting').stdout;
    assert.match(pre, /hook prerouting priority raw;/);
    assert.match(pre, /ip daddr 10\.96\.0\.10 meta l4proto \{ tcp, udp \} th dport 53 notrack/);
    const out = netnsExec(node, 'nft', 'list', 'chain', 'ip', 'weft', 'raw-output').stdout;
    assert.match(out, /hook output priority raw;/);
    assert.match(out, /ip daddr 10\.96\.0\.10 meta l4proto \{ tcp, udp \} th dport 53 notrack/);
    assert.match(out, /ip saddr 10\.96\.0\.10 meta l4proto \{ tcp, udp \} th sport 53 notrack/);
    assert.doesNotMatch(netnsExec(node, 'nft', 'list', 'tables').stdout, /table ip weft-dns/, 'no table of its own');
  }
  for (const pod of ['pod-1a', 'pod-2a'])
    assert.equal(
      readFileSync(join(ETC_NETNS, ns(pod), 'resolv.conf'), 'utf8'),
      'nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n',
    );
});

test('lab exec POD -- getent: glibc resolves a Service by short name, <svc>.<ns> and FQDN, an outside name through the upstream; a missing name fails', () => {
  const echo = json<Service[]>('lab', 'get', 'services', '--name', lab, '-o', 'json').find((s) => s.name === 'echo')!;
  for (const pod of ['pod-1a', 'pod-2a']) {
    for (const name of ['echo', 'echo.default', 'echo.default.svc.cluster.local', 'echo.default.svc.cluster.local.']) {
      const r = exec(pod, 'getent', 'hosts', name);
      assert.equal(r.code, 0, `${pod} ${name}: ${r.out}`);
      assert.equal(r.stdout.split(/\s+/)[0], echo.clusterIP, `${pod} ${name}`);
    }
    const outside = exec(pod, 'getent', 'hosts', 'example.test');
    assert.equal(outside.stdout.split(/\s+/)[0], '203.0.113.1', outside.out);
    assert.equal(exec(pod, 'getent', 'hosts', 'no-such-service').code, 2);
  }
  // TCP too, and the answer's own TTL (5 s) and authority.
  const tcp = exec('pod-1a', 'dig', '+tcp', '+noall', '+answer', 'echo.default.svc.cluster.local');
  assert.match(tcp.stdout, new RegExp(`^echo\\.default\\.svc\\.cluster\\.local\\.\\s+5\\s+IN\\s+A\\s+${echo.clusterIP!.replace(/\./g, '\\.')}$`), tcp.out);
});

test("a pod in another namespace searches its own first: its Service by short name, default's only as <svc>.default", () => {
  const file = manifest('team-a.yaml', [
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'dns-a', namespace: 'team-a', labels: { app: 'web' } },
      spec: { nodeName: 'node2', containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 80 }] }] },
    },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'team-a' }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } },
  ]);
  const applied = weft('lab', 'apply', '-f', file, '--name', lab);
  assert.equal(applied.code, 0, applied.out);
  assert.match(readFileSync(join(ETC_NETNS, ns('dns-a'), 'resolv.conf'), 'utf8'), /^search team-a\.svc\.cluster\.local svc\.cluster\.local cluster\.local$/m);
  const web = json<Service[]>('lab', 'get', 'services', '--name', lab, '-n', 'team-a', '-o', 'json').find((s) => s.name === 'web')!;
  assert.equal(exec('dns-a', 'getent', 'hosts', 'web').stdout.split(/\s+/)[0], web.clusterIP);
  assert.equal(exec('dns-a', 'getent', 'hosts', 'echo').code, 2, 'echo is in default, not in team-a');
  assert.equal(exec('dns-a', 'getent', 'hosts', 'echo.default').code, 0);
  assert.equal(exec('pod-1a', 'getent', 'hosts', 'web.team-a').stdout.split(/\s+/)[0], web.clusterIP);
  const removed = weft('lab', 'delete', '-f', file, '--name', lab);
  assert.equal(removed.code, 0, removed.out);
  assert.equal(existsSync(join(ETC_NETNS, ns('dns-a'))), false, "the pod's resolv.conf goes with it");
  assert.equal(exec('pod-1a', 'getent', 'hosts', 'web.team-a').code, 2, 'a deleted Service is gone from DNS');
});

test('a Service applied is resolvable from a pod on every node within a second, and gone as fast when deleted', () => {
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'fresh', namespace: 'default' },
    spec: { selector: { app: 'echo' }, ports: [{ port: 81 }] },
  };
  const file = manifest('fresh.yaml', [svc]);
  const until = (pod: string, want: number) => {
    const started = performance.now();
    for (;;) {
      // dig straight at the node's DNS: no search path, one query, ~10 ms per try.
      const r = netnsExec(pod, 'dig', '+short', '+time=1', '+tries=1', 'fresh.default.svc.cluster.local');
      const got = r.stdout.trim().split('\n').filter(Boolean).length;
      if (got === want) return performance.now() - started;
      if (performance.now() - started > 5000) assert.fail(`${pod}: ${got} answers after 5 s, want ${want}`);
    }
  };
  assert.equal(weft('lab', 'apply', '-f', file, '--name', lab).code, 0);
  for (const pod of ['pod-1a', 'pod-2a']) assert.ok(until(pod, 1) < 1000, `${pod} resolves the new Service`);
  assert.equal(weft('lab', 'delete', '-f', file, '--name', lab).code, 0);
  for (const pod of ['pod-1a', 'pod-2a']) assert.ok(until(pod, 0) < 1000, `${pod} no longer resolves it`);
});

test("without the DNS notrack rule in ip weft's raw-prerouting the service proxy takes the query (kube-dns has no endpoints: refused); the agent's resync puts it back", () => {
  const dig = () => exec('pod-1a', 'dig', '+time=1', '+tries=1', 'echo.default.svc.cluster.local');
  const rule = () =>
    netnsExec('node1', 'nft', '-a', 'list', 'chain', 'ip', 'weft', 'raw-prerouting').stdout.match(
      /ip daddr 10\.96\.0\.10 meta l4proto .* th dport 53 notrack .*# handle (\d+)/,
    )?.[1];
  assert.match(dig().out, /status: NOERROR/);
  assert.equal(netnsExec('node1', 'conntrack', '-L', '-d', '10.96.0.10').stderr.match(/(\d+) flow entries/)?.[1], '0', 'answered untracked');
  const handle = rule();
  assert.ok(handle, 'the DNS rule is in raw-prerouting');
  assert.equal(netnsExec('node1', 'nft', 'delete', 'rule', 'ip', 'weft', 'raw-prerouting', 'handle', handle).status, 0);
  assert.equal(rule(), undefined);
  assert.match(dig().out, /connection refused/, 'the proxy rejects what it can DNAT nowhere');
  const started = performance.now();
  while (!/status: NOERROR/.test(dig().out)) {
    assert.ok(performance.now() - started < 25_000, 'the agent repairs the chain within two resyncs');
    spawnSync('sleep', ['0.5']);
  }
  assert.ok(rule(), 'the DNS rule is back');
});

test("the node's DNS device outlives its agent: queries are refused at once while it is down and answered again when lab up brings it back", () => {
  const ifindex = () => netnsExec('node1', 'cat', '/sys/class/net/weft-dns/ifindex').stdout.trim();
  const before = ifindex();
  const status = json<{ pid: number }>('agent', 'status', '--state-dir', nodeDir(lab, 'node1'), '--json');
  process.kill(status.pid, 'SIGTERM');
  const dig = () => exec('pod-1a', 'dig', '+time=1', '+tries=1', 'echo.default.svc.cluster.local');
  const started = performance.now();
  while (!/connection refused/.test(dig().out)) assert.ok(performance.now() - started < 15_000, 'the agent stops');
  assert.equal(ifindex(), before);
  assert.equal(weft('lab', 'up', '--name', lab).code, 0);
  const back = performance.now();
  while (!/status: NOERROR/.test(dig().out)) assert.ok(performance.now() - back < 15_000, 'the restarted agent serves DNS again');
  assert.equal(ifindex(), before, 'the same device, not made again');
});

test("verify's Service discovery section passes, with evidence", () => {
  const r = weft('verify', '--name', lab, '--json');
  const results = (JSON.parse(r.stdout) as { results: { group: string; check: string; ok: boolean; evidence: string }[] }).results.filter(
    (x) => x.group === 'Service discovery',
  );
  assert.deepEqual(
    results.filter((x) => !x.ok),
    [],
  );
  assert.deepEqual(
    [...new Set(results.map((x) => x.check))],
    ['short name', '<svc>.<ns>', 'FQDN', 'connect by name', 'headless', 'SRV', 'PTR', 'ExternalName', 'outside name', 'missing name', 'node-local'],
  );
  assert.equal(results.filter((x) => x.check === 'short name').length, 2, 'one pod per node');
  assert.match(results.find((x) => x.check === 'missing name')!.evidence, /NXDOMAIN/);
});
