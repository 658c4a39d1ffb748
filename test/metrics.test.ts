/**
 * The agent's Prometheus metrics and JSON logs, from real agents: two vxlan nodes on an emulated
 * underlay with a real etcd, scraped from the underlay's router namespace over HTTP, the text checked
 * with `promtool check metrics`; then a CNI ADD, a repaired drift, forged VXLAN packets, a Service
 * and DNS queries move their metrics, and the JSON log lines carry node, subnet, pod and service.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Cluster, flannelDocConfig, NODE, waitFor, WEFT } from './agent-support.js';

const METRICS_PORT = 9402;
const ipOf = (node: string) => `198.18.0.${10 + Number(node.slice(1))}`;

/** One sample line's name and labels as written (`weft_x{a="b"}`) → value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** The sum of every sample of `name` whose labels include all of `labels`. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [key, v] of samples(text)) {
    const m = /^([^{]+)(?:\{(.*)\})?$/.exec(key)!;
    if (m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (Object.entries(labels).every(([k, want]) => have.get(k) === want)) sum += v;
  }
  return sum;
}

describe('agent metrics and logs', { timeout: 300_000 }, () => {
  let c: Cluster;
  let failed = false;
  const check = (name: string, fn: () => Promise<void>): void => {
    it(name, async () => {
      try {
        await fn();
      } catch (e) {
        failed = true;
        throw e;
      }
    });
  };

  /** GET a path of a node's metrics listener, from the underlay's router namespace. */
  const get = async (node: string, path = '/metrics'): Promise<{ status: number; type: string; body: string }> => {
    const script = `fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, type: r.headers.get('content-type'), body: await r.text() })))`;
    const r = await c.exec('rt', [NODE, '-e', script, `http://${ipOf(node)}:${METRICS_PORT}${path}`]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { status: number; type: string; body: string };
  };
  const scrape = async (node: string): Promise<string> => {
    const r = await get(node);
    assert.equal(r.status, 200);
    return r.body;
  };
  const until = (what: string, node: string, ok: (text: string) => boolean) =>
    waitFor(what, async () => {
      const text = await scrape(node);
      return ok(text) ? text : undefined;
    });
  const jsonLog = (node: string) =>
    c
      .node(node)
      .agent!.log.filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  /** `weft cni add|del` of pod default/a1 on n1, through n1's agent (the runtime as kubelet would call it). */
  const cni = (command: 'add' | 'del', ns: string) => {
    const node = c.node('n1');
    const cache = ['--cache-dir', join(node.dir, 'cache'), '--args', 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=a1'];
    return c.exec('n1', [NODE, WEFT, 'cni', command, '--conf', node.conflist, '--cni-path', `${c.binDir}:/usr/lib/cni`, ...cache, ns]);
  };
  const logged = (node: string, msg: string | RegExp) => jsonLog(node).filter((e) => (typeof msg === 'string' ? e.msg === msg : msg.test(String(e.msg))));

  before(async () => {
    c = await Cluster.create('vxlan');
    const init = await c.networkInit(flannelDocConfig('vxlan'));
    assert.equal(init.code, 0, init.stderr);
    await c.addNode('n1', 1);
    await c.addNode('n2', 2);
    c.startAgent('n1', ['--metrics-listen', `${ipOf('n1')}:${METRICS_PORT}`, '--log-format', 'json', '--lease-ttl', '4']);
    c.startAgent('n2', ['--metrics-listen', `${ipOf('n2')}:${METRICS_PORT}`, '--log-format', 'json']);
    await c.waitReady('n1', 1);
    await c.waitReady('n2', 1);
  });

  after(async () => {
    if ((failed || process.env.WEFT_TEST_SHOW_LOGS) && c) console.log(c.logs());
    await c?.destroy();
  });

  check('a real scrape passes promtool check metrics and has every metric family', async () => {
    const text = await scrape('n1');
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'promtool has no lint remarks');
    const families = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`));
    for (const f of [
      'weft_agent_info gauge',
      'weft_lease_held gauge',
      'weft_lease_info gauge',
      'weft_lease_renewals_total counter',
      'weft_etcd_up gauge',
      'weft_reconciles_total counter',
      'weft_reconcile_duration_seconds histogram',
      'weft_drift_repairs_total counter',
      'weft_vxlan_forged_packets_total counter',
      'weft_udp_packets_total counter',
      'weft_cni_request_duration_seconds histogram',
      'weft_cni_request_errors_total counter',
      'weft_service_sync_duration_seconds histogram',
      'weft_service_rules gauge',
      'weft_dns_responses_total counter',
      'weft_dns_request_duration_seconds histogram',
      'weft_process_cpu_seconds_total counter',
    ])
      assert.ok(families.has(f), `# TYPE ${f}`);
  });

  check('lease, etcd and reconcile state; renewals count up', async () => {
    const text = await scrape('n1');
    assert.equal(value(text, 'weft_agent_info', { node: 'n1', backend: 'vxlan' }), 1);
    assert.equal(value(text, 'weft_lease_held'), 1);
    assert.equal(value(text, 'weft_lease_info', { subnet: c.subnetOf('n1').replace(/\.1\//, '.0/'), public_ip: ipOf('n1') }), 1);
    assert.equal(value(text, 'weft_remote_leases'), 1);
    assert.equal(value(text, 'weft_etcd_up'), 1);
    assert.equal(value(text, 'weft_reconciles_total', { trigger: 'initial', result: 'ok' }), 1);
    assert.ok(value(text, 'weft_reconcile_duration_seconds_count') >= 1);
    // --lease-ttl 4 renews every 2 s.
    const renewals = value(text, 'weft_lease_renewals_total');
    await until('a lease renewal', 'n1', (t) => value(t, 'weft_lease_renewals_total') > renewals);
    // --resync 1: periodic reconciles. One that reads netlink after the initial run's changes diffs; a quiet one after it has nothing to diff.
    await until('resync reconciles', 'n1', (t) => value(t, 'weft_reconciles_total', { trigger: 'resync', result: 'ok' }) >= 1);
    await until('a quiet resync', 'n1', (t) => value(t, 'weft_reconciles_total', { trigger: 'resync', result: 'unchanged' }) >= 1);
  });

  check('an agent that cannot reach etcd serves metrics already: etcd down, no lease', async () => {
    const n3 = await c.addNode('n3', 3);
    const agent = c.spawn('n3', [
      NODE,
      WEFT,
      'agent',
      '--node',
      'n3',
      '--etcd-endpoints',
      'http://198.18.0.2:2999',
      '--state-dir',
      n3.stateDir,
      '--subnet-file',
      n3.subnetFile,
      '--metrics-listen',
      `${ipOf('n3')}:${METRICS_PORT}`,
    ]);
    try {
      const text = await until('n3 answering', 'n3', (t) => value(t, 'weft_etcd_up') === 0);
      assert.equal(value(text, 'weft_lease_held'), 0);
      assert.equal(value(text, 'weft_agent_info', { node: 'n3' }), 1);
    } finally {
      agent.kill('SIGTERM');
    }
  });

  check('only /metrics is served', async () => {
    const ok = await get('n1');
    assert.match(ok.type, /^text\/plain; version=0\.0\.4/);
    assert.equal((await get('n1', '/')).status, 404);
    assert.equal((await get('n1', '/metrics/x')).status, 404);
  });

  check('a CNI ADD moves the ADD histogram and is logged with its pod, IP and subnet', async () => {
    const before = value(await scrape('n1'), 'weft_cni_request_duration_seconds_count', { command: 'ADD', plugin: 'weft' });
    const node = c.node('n1');
    const ns = await c.topo.netns('a1');
    const r = await cni('add', ns);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const ip = (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    const text = await scrape('n1');
    assert.equal(value(text, 'weft_cni_request_duration_seconds_count', { command: 'ADD', plugin: 'weft' }), before + 1);
    assert.ok(value(text, 'weft_cni_request_duration_seconds_sum', { command: 'ADD' }) > 0);
    const add = logged('n1', 'cni ADD').at(-1);
    assert.ok(add, 'a cni ADD log line');
    assert.equal(add.node, 'n1');
    assert.equal(add.pod, 'default/a1');
    assert.equal(add.ip, ip);
    assert.equal(add.subnet, c.subnetOf('n1').replace(/\.1\//, '.0/'));

    // A failed request: DEL through the same socket with a config the plugin refuses.
    const bad = join(node.dir, 'bad.conflist');
    writeFileSync(bad, JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', plugins: [{ type: 'weft', mode: 'nope', socket: join(node.dir, 'cni.sock') }] }));
    const e = await c.exec('n1', [
      NODE,
      WEFT,
      'cni',
      'add',
      '--conf',
      bad,
      '--cni-path',
      `${c.binDir}:/usr/lib/cni`,
      '--cache-dir',
      join(node.dir, 'cache2'),
      ns,
    ]);
    assert.notEqual(e.code, 0);
    const after = await scrape('n1');
    assert.ok(value(after, 'weft_cni_request_errors_total', { command: 'ADD', plugin: 'weft' }) >= 1, `the failed ADD is counted: ${e.stdout}${e.stderr}`);
    assert.ok(logged('n1', 'cni ADD failed').length >= 1);
  });

  check('a route deleted behind the agent is repaired and counted as drift of kind route', async () => {
    const before = value(await scrape('n1'), 'weft_drift_repairs_total', { kind: 'route' });
    const s2 = c.subnetOf('n2').replace(/\.1\//, '.0/');
    await c.show('n1', ['ip', 'route', 'del', s2]);
    await until('the repair counted', 'n1', (t) => value(t, 'weft_drift_repairs_total', { kind: 'route' }) >= before + 1);
    const line = logged('n1', `add route ${s2} via ${s2.replace(/\/\d+$/, '')} dev flannel.1 onlink`).at(-1);
    assert.ok(line, 'the repair is logged');
    assert.equal(line.kind, 'route');
    assert.equal(line.reason, 'resync');
  });

  check('forged VXLAN packets show in weft_vxlan_forged_packets_total (the firewall counter, read at scrape)', async () => {
    const before = value(await scrape('n1'), 'weft_vxlan_forged_packets_total');
    const dev = (await c.status('n1')).desired!.device!;
    const mac = dev.kind === 'tun' ? '' : dev.mac;
    for (let i = 0; i < 3; i++) assert.equal((await c.tool('out', ['forge', ipOf('n1'), '1', mac, '10.244.200.9', '10.244.200.10', '7000'])).code, 0);
    await until('the forged drops counted', 'n1', (t) => value(t, 'weft_vxlan_forged_packets_total') >= before + 3);
  });

  check('a Service: sync duration, rule counts and a log line naming it; DNS answers by rcode with latency', async () => {
    const file = join(c.topo.dir, 'svc.json');
    writeFileSync(
      file,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web', namespace: 'default' },
        spec: { selector: { app: 'web' }, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80 }] },
      }),
    );
    const r = await c.exec('etcd', [NODE, WEFT, 'service', 'apply', '-f', file, '--etcd-endpoints', c.endpoint]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await until('the Service programmed', 'n1', (t) => value(t, 'weft_services') === 1);
    const l = await c.exec('etcd', [NODE, WEFT, 'pod', 'label', 'a1', 'app=web', '--etcd-endpoints', c.endpoint]);
    assert.equal(l.code, 0, l.stdout + l.stderr);
    const text = await until('its endpoint programmed', 'n1', (t) => value(t, 'weft_service_endpoints') === 1);
    assert.ok(value(text, 'weft_service_rules') >= 2, 'a DNAT and a masquerade mark rule for the endpoint');
    assert.ok(value(text, 'weft_service_chains') >= 1);
    assert.ok(value(text, 'weft_service_sync_duration_seconds_count', { kind: 'incremental' }) >= 1);
    assert.ok(value(text, 'weft_service_sync_duration_seconds_count', { kind: 'full' }) >= 1, 'the first sync is full');
    await waitFor('the update logged', () => logged('n1', 'service rules updated').find((e) => e.service === 'default/web'));

    const dig = (name: string) => c.exec('a1', ['dig', '+time=2', '+tries=3', '@10.96.0.10', name]);
    const before = await scrape('n1');
    assert.equal((await dig('web.default.svc.cluster.local')).code, 0);
    assert.equal((await dig('nothing.default.svc.cluster.local')).code, 0);
    const after = await scrape('n1');
    assert.equal(value(after, 'weft_dns_responses_total', { rcode: 'NOERROR' }), value(before, 'weft_dns_responses_total', { rcode: 'NOERROR' }) + 1);
    assert.equal(value(after, 'weft_dns_responses_total', { rcode: 'NXDOMAIN' }), value(before, 'weft_dns_responses_total', { rcode: 'NXDOMAIN' }) + 1);
    assert.equal(value(after, 'weft_dns_queries_total', { protocol: 'udp' }), value(before, 'weft_dns_queries_total', { protocol: 'udp' }) + 2);
    assert.equal(
      value(after, 'weft_dns_request_duration_seconds_count', { protocol: 'udp' }),
      value(before, 'weft_dns_request_duration_seconds_count', { protocol: 'udp' }) + 2,
    );
    const pr = spawnSync('promtool', ['check', 'metrics'], { input: after, encoding: 'utf8' });
    assert.equal(pr.status, 0, `promtool: ${pr.stdout}${pr.stderr}`);
  });

  check('a CNI DEL moves the DEL histogram and is logged with its pod', async () => {
    const before = value(await scrape('n1'), 'weft_cni_request_duration_seconds_count', { command: 'DEL', plugin: 'weft' });
    const r = await cni('del', c.topo.path('a1'));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(value(await scrape('n1'), 'weft_cni_request_duration_seconds_count', { command: 'DEL', plugin: 'weft' }), before + 1);
    assert.equal(logged('n1', 'cni DEL').at(-1)?.pod, 'default/a1');
    await waitFor('the pod unregistered', () => logged('n1', 'pod unregistered').find((e) => e.pod === 'default/a1'));
  });

  check('every log line is one JSON object with time, level, msg and node; the events carry subnet, pod and service', () => {
    const lines = jsonLog('n1');
    assert.ok(lines.length > 10);
    for (const l of lines) {
      assert.equal(typeof l.time, 'string');
      assert.ok(['debug', 'info', 'warn', 'error'].includes(String(l.level)));
      assert.equal(typeof l.msg, 'string');
      assert.equal(l.node, 'n1');
    }
    const own = c.subnetOf('n1').replace(/\.1\//, '.0/');
    const acquired = logged('n1', 'lease acquired')[0];
    assert.equal(acquired?.subnet, own);
    assert.equal(acquired.lease, `subnets/${own.replace('/', '-')}`);
    assert.equal(logged('n1', 'running')[0]?.subnet, own);
    assert.equal(logged('n1', 'remote lease added')[0]?.subnet, c.subnetOf('n2').replace(/\.1\//, '.0/'));
    assert.equal(logged('n1', 'pod registered')[0]?.pod, 'default/a1');
    assert.ok(logged('n1', 'service rules updated').some((e) => e.service === 'default/web'));
    return Promise.resolve();
  });
});

describe('udp backend metrics', { timeout: 300_000 }, () => {
  let c: Cluster;

  before(async () => {
    c = await Cluster.create('udp');
    const init = await c.networkInit(flannelDocConfig('udp'));
    assert.equal(init.code, 0, init.stderr);
    for (const n of ['n1', 'n2']) {
      await c.addNode(n, Number(n.slice(1)));
      c.startAgent(n, ['--metrics-listen', `${ipOf(n)}:${METRICS_PORT}`]);
    }
    await c.waitReady('n1', 1);
    await c.waitReady('n2', 1);
  });

  after(async () => {
    if (process.env.WEFT_TEST_SHOW_LOGS && c) console.log(c.logs());
    await c?.destroy();
  });

  it("the packet loop's counters: pod traffic across nodes, and datagrams from a non-node dropped", async () => {
    const a1 = await c.addPod('a1', 'n1');
    await c.addPod('b1', 'n2');
    assert.equal(await c.tcpEventually('b1', a1.ip), c.pod('b1').ip);
    assert.equal((await c.tool('out', ['garbage', ipOf('n1'), '8285', '5'])).code, 0);
    const script = `fetch(process.argv[1]).then(async (r) => process.stdout.write(await r.text()))`;
    const text = await waitFor('the drops counted', async () => {
      const r = await c.exec('rt', [NODE, '-e', script, `http://${ipOf('n1')}:${METRICS_PORT}/metrics`]);
      return value(r.stdout, 'weft_udp_dropped_packets_total', { reason: 'unknown_source' }) >= 5 ? r.stdout : undefined;
    });
    for (const direction of ['tx', 'rx']) {
      assert.ok(value(text, 'weft_udp_packets_total', { direction }) > 0, `${direction} packets`);
      assert.ok(value(text, 'weft_udp_bytes_total', { direction }) > 0, `${direction} bytes`);
    }
    assert.equal(value(text, 'weft_agent_info', { node: 'n1', backend: 'udp' }), 1);
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
  });
});
