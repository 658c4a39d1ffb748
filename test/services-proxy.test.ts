/**
 * The service proxy in a real lab: 2 vxlan nodes with their agents, real etcd, real nftables and
 * real connections from inside pods, nodes and the outside world. One test per behaviour the issue
 * lists under "The proxy"; each Service selects pods labelled `<service>=on`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { formatStatus } from '../src/agent/status.js';
import { dropLeasesOf } from '../src/lab/etcd.js';
import { addPod, removePod } from '../src/lab/lab.js';
import type { PodRecord, Service } from '../src/service/types.js';
import { Topology } from '../src/topo/topology.js';
import { waitFor } from '../src/util/wait.js';
import { OUTSIDE, pods, serviceDoc, ServicesLab, TABLE } from './services-support.js';

let topo: Topology;
let lab: ServicesLab;

before(async () => {
  topo = await Topology.create();
  lab = await ServicesLab.up(topo.id);
});

after(async () => {
  await lab?.down();
  await topo?.destroy();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const clusterIP = (svc: Service) => svc.clusterIP!;
const nodePort = (svc: Service, proto: 'TCP' | 'UDP') => svc.ports.find((p) => p.protocol === proto)!.nodePort!;

/** A Service selecting `members`, applied and labelled; resolves with it as the registry has it. */
async function service(name: string, members: string[], spec: Record<string, unknown> = {}, extra: { ports?: object[] } = {}): Promise<Service> {
  await lab.apply(serviceDoc(name, spec, extra));
  for (const p of members) await lab.label(p, { [name]: 'on' });
  return lab.service(name);
}

test('the agents register pods from the served CNI path (IP, node) and unregister them on DEL', async () => {
  const line = (p: { name: string; ip?: string; node?: string }) => `${p.name} ${p.ip} ${p.node}`;
  const want = lab.s.pods.map(line).sort().join('\n');
  await waitFor(async () => (await lab.call<PodRecord[]>('listPods', 'default')).map(line).sort().join('\n') === want, {
    timeoutMs: 30_000,
    what: `the registry to hold the lab's pods:\n${want}`,
  });
  const made = await addPod(lab.s, 'reg-tmp', 'node2');
  const rec = await lab.call<PodRecord[]>('listPods', 'default');
  assert.equal(line(rec.find((p) => p.name === 'reg-tmp') ?? { name: 'missing' }), `reg-tmp ${made.ip} node2`);
  await removePod(lab.s, 'reg-tmp');
  const gone = await lab.call<PodRecord[]>('listPods', 'default');
  assert.equal(
    gone.find((p) => p.name === 'reg-tmp'),
    undefined,
    'CNI DEL left the pod registered',
  );
  lab.refresh();
});

test('ClusterIP from pods on both nodes reaches every backend, which sees the client pod IP; the node reaches it too', async () => {
  const web = await service('web', ['pod-1a', 'pod-2a']);
  for (const from of ['pod-1b', 'pod-2b']) {
    for (const proto of ['tcp', 'udp'] as const) {
      await lab.until(from, proto, clusterIP(web), 80, ['pod-1a', 'pod-2a']);
      for (const a of await lab.probe(from, proto, clusterIP(web), 80, { count: 6 })) {
        assert.ok(a.ok, a.ok ? '' : a.error);
        assert.equal(a.seen.client, lab.pod(from).ip, `${a.seen.pod} saw ${from}'s ${proto} connection from ${a.seen.client}, not the pod's own IP`);
      }
    }
  }
  await lab.until('node1', 'tcp', clusterIP(web), 80, ['pod-1a', 'pod-2a']);
  await lab.until('node2', 'udp', clusterIP(web), 80, ['pod-1a', 'pod-2a']);
});

test('hairpin: a pod reaching itself through its Service gets the answer (masqueraded)', async () => {
  const hair = await service('hair', ['pod-1b']);
  for (const proto of ['tcp', 'udp'] as const) {
    await lab.until('pod-1b', proto, clusterIP(hair), 80, ['pod-1b']);
    const [a] = await lab.probe('pod-1b', proto, clusterIP(hair), 80);
    assert.ok(a?.ok);
    assert.notEqual(a.seen.client, lab.pod('pod-1b').ip, 'hairpin traffic was not masqueraded');
  }
});

test('NodePort: from outside the cluster, every node forwards to every endpoint (TCP and UDP)', async () => {
  const np = await service('np', ['pod-1a', 'pod-2a'], { type: 'NodePort' });
  for (const node of lab.s.nodes) {
    await lab.until(OUTSIDE, 'tcp', node.ip, nodePort(np, 'TCP'), ['pod-1a', 'pod-2a']);
    await lab.until(OUTSIDE, 'udp', node.ip, nodePort(np, 'UDP'), ['pod-1a', 'pod-2a']);
  }
});

test('externalTrafficPolicy Local: the local endpoint sees the outside client IP; a node without one drops', async () => {
  const npl = await service('npl', ['pod-1a'], { type: 'NodePort', externalTrafficPolicy: 'Local' });
  const port = nodePort(npl, 'TCP');
  await lab.until(OUTSIDE, 'tcp', lab.node('node1').ip, port, ['pod-1a']);
  for (const a of await lab.probe(OUTSIDE, 'tcp', lab.node('node1').ip, port, { count: 4 })) {
    assert.ok(a.ok);
    assert.equal(a.seen.client, lab.s.outside.gateway, 'the client IP was not kept');
  }
  // Before node2 has the Service its kernel refuses (no listener); after, the packets are dropped.
  await waitFor(async () => (await lab.probe(OUTSIDE, 'tcp', lab.node('node2').ip, port, { timeoutMs: 800 }))[0]!.code === 'TIMEOUT', {
    timeoutMs: 30_000,
    what: 'node2 to drop NodePort traffic it has no local endpoint for',
  });
  assert.deepEqual(pods(await lab.probe(OUTSIDE, 'tcp', lab.node('node2').ip, port, { count: 3, timeoutMs: 800 })), ['!TIMEOUT', '!TIMEOUT', '!TIMEOUT']);
});

test('internalTrafficPolicy Local: pods reach only their own node’s endpoints; none there drops', async () => {
  const itl = await service('itl', ['pod-1a', 'pod-2a'], { internalTrafficPolicy: 'Local' });
  await lab.until('pod-1b', 'tcp', clusterIP(itl), 80, ['pod-1a']);
  await lab.until('pod-2b', 'tcp', clusterIP(itl), 80, ['pod-2a']);
  await lab.label('pod-2a', { itl: null });
  await lab.until('pod-2b', 'tcp', clusterIP(itl), 80, ['!TIMEOUT']);
  await lab.until('pod-1b', 'tcp', clusterIP(itl), 80, ['pod-1a']);
});

test('session affinity ClientIP: a client sticks to one endpoint; its entry expires after timeoutSeconds', async () => {
  const aff = await service('aff', ['pod-1a', 'pod-2a'], { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 4 } } });
  const sets = async () => {
    const text = await lab.nft('node1', 'list', 'sets', 'table', 'ip', await lab.tableOf('node1', 'aff'));
    return text.split(/\n(?=\s*set )/).filter((s) => /set affinity-\w+-default\/aff\/tcp\/http__/.test(s));
  };
  await waitFor(async () => (await sets()).length === 2, { timeoutMs: 30_000, what: "node1's two affinity sets of Service aff" });
  const client = lab.pod('pod-1b').ip;
  const holding = async () => (await sets()).filter((s) => s.includes(`${client} `) || s.includes(`${client},`)).length;
  for (const from of ['pod-2b', 'pod-1b']) {
    const seen = new Set(pods(await lab.probe(from, 'tcp', clusterIP(aff), 80, { count: 16 })));
    assert.equal(seen.size, 1, `${from} did not stick to one endpoint: ${[...seen].join(', ')}`);
    assert.ok(![...seen][0]!.startsWith('!'), `${from} got no answer`);
  }
  // Right after pod-1b's last connection refreshed it: read later (after other probes on a loaded machine) it may have expired.
  assert.equal(await holding(), 1, `no affinity set on node1 holds ${client}:\n${(await sets()).join('\n')}`);
  assert.match((await sets()).join('\n'), /timeout 4s/);
  await sleep(5000);
  assert.equal(await holding(), 0, `${client}'s affinity entry outlived its 4 s timeout`);
  const again = new Set(pods(await lab.probe('pod-1b', 'tcp', clusterIP(aff), 80, { count: 10 })));
  assert.equal(again.size, 1);
});

test('no endpoints: TCP is reset and UDP gets port unreachable at once; the first endpoint is used as it comes', async () => {
  const none = await service('none', [], { type: 'NodePort' });
  const ip = clusterIP(none);
  await waitFor(async () => (await lab.probe('pod-1b', 'tcp', ip, 80, { timeoutMs: 800 }))[0]!.code === 'ECONNREFUSED', {
    timeoutMs: 30_000,
    what: 'a refused connection to a Service without endpoints',
  });
  // Many clients (or one retrying) get a reset every time: ICMP errors are rate-limited by the kernel (6 at once, then 1/s), resets are not.
  for (const a of await lab.probe('pod-1b', 'tcp', ip, 80, { count: 20, timeoutMs: 3000 })) {
    assert.equal(a.ok ? a.seen.pod : a.code, 'ECONNREFUSED', `tcp: ${a.ok ? 'answered' : a.error}`);
    assert.ok(a.ms < 500, `tcp refusal took ${a.ms.toFixed(0)} ms`);
  }
  await sleep(1500);
  const [udp] = await lab.probe('pod-1b', 'udp', ip, 80, { timeoutMs: 3000 });
  assert.equal(udp!.ok ? udp!.seen.pod : udp!.code, 'ECONNREFUSED', `udp: ${udp!.ok ? 'answered' : udp!.error}`);
  assert.ok(udp!.ms < 500, `udp refusal took ${udp!.ms.toFixed(0)} ms`);
  const [np] = await lab.probe(OUTSIDE, 'tcp', lab.node('node2').ip, nodePort(none, 'TCP'), { timeoutMs: 3000 });
  assert.equal(np!.ok ? 'answered' : np!.code, 'ECONNREFUSED');
  // UDP from one source port: refused, then answered once the Service has an endpoint.
  const srcPort = 41_053;
  await sleep(1500);
  assert.equal(pods(await lab.probe('pod-1b', 'udp', ip, 80, { srcPort }))[0], '!ECONNREFUSED');
  await lab.label('pod-2a', { none: 'on' });
  await waitFor(async () => pods(await lab.probe('pod-1b', 'udp', ip, 80, { srcPort, timeoutMs: 800 }))[0] === 'pod-2a', {
    timeoutMs: 30_000,
    what: 'the same UDP flow to reach the new endpoint',
  });
});

test('a Service without a selector takes its endpoints from an EndpointSlice; a selector picks pods of its own namespace only', async () => {
  const target = lab.pod('pod-2b');
  await lab.apply(
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'manual', namespace: 'default' },
      spec: { ports: [{ name: 'web', protocol: 'TCP', port: 8080, targetPort: 80 }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'manual-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'manual' } },
      addressType: 'IPv4',
      ports: [{ name: 'web', protocol: 'TCP', port: 80 }],
      endpoints: [{ addresses: [target.ip], conditions: { ready: true }, nodeName: target.node }],
    },
  );
  const manual = await lab.service('manual');
  await lab.until('pod-1b', 'tcp', clusterIP(manual), 8080, ['pod-2b']);
  // An address outside the pod Network needs no lease: a Service in front of a server outside the cluster.
  await lab.apply(
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'external', namespace: 'default' }, spec: { ports: [{ protocol: 'TCP', port: 80 }] } },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'external-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'external' } },
      addressType: 'IPv4',
      ports: [{ name: '', protocol: 'TCP', port: 80 }],
      endpoints: [{ addresses: [lab.s.outside.ip], conditions: { ready: true } }],
    },
  );
  await lab.until('pod-1b', 'tcp', clusterIP(await lab.service('external')), 80, [OUTSIDE]);
  // Same selector as `web` (whose pods are in `default`), in another namespace: no endpoints.
  await lab.apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { selector: { web: 'on' }, ports: [{ port: 80 }] },
  });
  const shop = await lab.service('web', 'shop');
  await lab.until('pod-1b', 'tcp', clusterIP(shop), 80, ['!ECONNREFUSED']);
});

test('terminating endpoints serve only when no ready one is left', async () => {
  const term = await service('term', ['pod-1a', 'pod-2a']);
  const ip = clusterIP(term);
  await lab.until('pod-1b', 'tcp', ip, 80, ['pod-1a', 'pod-2a']);
  try {
    await lab.call('setPodTerminating', 'default', 'pod-1a', true);
    await lab.until('pod-1b', 'tcp', ip, 80, ['pod-2a']);
    await lab.call('setPodTerminating', 'default', 'pod-2a', true);
    await lab.until('pod-1b', 'tcp', ip, 80, ['pod-1a', 'pod-2a']);
    await lab.call('setPodReady', 'default', 'pod-1a', false);
    await lab.until('pod-1b', 'tcp', ip, 80, ['pod-2a']);
    await lab.call('setPodReady', 'default', 'pod-2a', false);
    await lab.until('pod-1b', 'tcp', ip, 80, ['!ECONNREFUSED']);
  } finally {
    for (const p of ['pod-1a', 'pod-2a']) {
      await lab.call('setPodReady', 'default', p, true);
      await lab.call('setPodTerminating', 'default', p, false);
    }
  }
  await lab.until('pod-1b', 'tcp', ip, 80, ['pod-1a', 'pod-2a']);
});

test('an endpoint taken out of a Service keeps its established TCP connection; new ones avoid it', async () => {
  const keep = await service('keep', ['pod-1a', 'pod-2a']);
  const ip = clusterIP(keep);
  await lab.until('pod-1b', 'tcp', ip, 80, ['pod-1a', 'pod-2a']);
  const first = await lab.open('pod-1b', 'keep', ip, 80);
  assert.ok(first.ok, first.ok ? '' : first.error);
  const held = first.seen.pod;
  const other = held === 'pod-1a' ? 'pod-2a' : 'pod-1a';
  await lab.label(held, { keep: null });
  let broken = '';
  await waitFor(
    async () => {
      // The held connection is used on every round, well inside the workload's 5 s keep-alive.
      const a = await lab.again('pod-1b', 'keep');
      if (!a.ok || a.seen.pod !== held) broken = a.ok ? `answered by ${a.seen.pod}` : a.error;
      if (broken) return true;
      return [...(await lab.answeredBy('pod-1b', 'tcp', ip, 80, 8))].join() === other;
    },
    { timeoutMs: 30_000, intervalMs: 200, what: `new connections to avoid ${held}` },
  );
  assert.equal(broken, '', `the established connection to ${held} broke when it left the Service`);
  const last = await lab.again('pod-1b', 'keep');
  assert.equal(last.ok && last.seen.pod, held);
  await lab.close('pod-1b', 'keep');
});

test('UDP: conntrack entries to an endpoint that went away are deleted, so the same flow moves on', async () => {
  const dns = await service('dns', ['pod-1a'], {}, { ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 80 }] });
  const ip = clusterIP(dns);
  await lab.until('pod-1b', 'udp', ip, 53, ['pod-1a']);
  const srcPort = 42_053;
  const flow = async () => pods(await lab.probe('pod-1b', 'udp', ip, 53, { srcPort, timeoutMs: 800 }))[0];
  assert.equal(await flow(), 'pod-1a');
  await lab.label('pod-2a', { dns: 'on' });
  await lab.until('pod-1b', 'udp', ip, 53, ['pod-1a', 'pod-2a']);
  // The flow's conntrack entry keeps it on pod-1a while pod-1a is an endpoint (the precondition of the bug).
  assert.deepEqual([await flow(), await flow(), await flow()], ['pod-1a', 'pod-1a', 'pod-1a']);
  // Right after a resync tick (whose full sync would delete stray flows too), so that only the update itself can move the flow in time.
  const tick = async () => {
    const last = (await lab.agentStatus('node1')).services?.lastSync;
    return last?.reason.startsWith('resync') ? last.at : undefined;
  };
  const before = await tick();
  await waitFor(async () => ((await tick()) ?? before) !== before, { timeoutMs: 30_000, what: "node1's next resync tick" });
  await lab.label('pod-1a', { dns: null });
  const started = Date.now();
  await waitFor(async () => (await flow()) === 'pod-2a', { timeoutMs: 5000, intervalMs: 100, what: 'the UDP flow to leave the removed endpoint' });
  assert.ok(Date.now() - started < 5000);
});

test('one Service change is one nft transaction touching only that Service; other chains keep their handles', async () => {
  const web = await lab.service('web');
  const handles = async () => {
    const out = new Map<string, string>();
    for (const [table, text] of await lab.tables('node1', '-a')) {
      if (!table.startsWith(TABLE)) continue;
      let chain = '';
      for (const line of text.split('\n')) {
        const c = /^\s*chain (\S+) \{ # handle (\d+)/.exec(line);
        if (c) {
          chain = c[1]!;
          out.set(`${table} ${chain}`, c[2]!);
          continue;
        }
        const r = /# handle (\d+)$/.exec(line);
        if (r && chain && !/^\s*(set|map|table) /.test(line)) out.set(`${table} ${chain} rule ${line.trim().replace(/ # handle \d+$/, '')}`, r[1]!);
      }
    }
    return out;
  };
  const before = await handles();
  const monitor = spawn('ip', ['netns', 'exec', lab.node('node1').ns, 'nft', 'monitor']);
  let events = '';
  monitor.stdout.on('data', (d: Buffer) => (events += d.toString()));
  await sleep(1000);
  try {
    await lab.label('pod-1b', { web: 'on' });
    await lab.until('node1', 'tcp', clusterIP(web), 80, ['pod-1a', 'pod-1b', 'pod-2a']);
    await sleep(500);
  } finally {
    monitor.kill();
  }
  const generations = events.split('\n').filter((l) => l.startsWith('# new generation'));
  assert.equal(generations.length, 1, `expected one transaction, nft monitor saw:\n${events}`);
  assert.doesNotMatch(events, /^(delete|flush) table/m, 'the table was flushed or deleted');
  const foreign = events
    .split('\n')
    .filter((l) => /^(add|delete|flush) /.test(l))
    .filter((l) => !l.includes('default/web/') && !l.includes(clusterIP(web)));
  assert.deepEqual(foreign, [], "the transaction touched other Services' chains or elements");
  const after = await handles();
  const moved = [...before].filter(([k, h]) => !k.includes('default/web/') && after.get(k) !== h).map(([k]) => k);
  assert.deepEqual(moved, [], 'chains or rules of other Services were replaced');
});

test('drift is repaired on the resync tick: a deleted map element and a flushed chain come back', async () => {
  const web = await lab.service('web');
  const keep = await lab.service('keep');
  const [webTable, keepTable] = [await lab.tableOf('node1', 'web'), await lab.tableOf('node1', 'keep')];
  const keepChain = /chain (service-\w+-default\/keep\/tcp\/http) \{/.exec((await lab.tables('node1')).get(keepTable)!)?.[1];
  assert.ok(keepChain, `no service chain of keep in table ${keepTable}`);
  await lab.nft('node1', 'delete', 'element', 'ip', webTable, 'service-ips', `{ ${clusterIP(web)} . tcp . 80 }`);
  // Read back at once (a resync may repair it any moment): the break happened.
  const left = await lab.nft('node1', 'list', 'map', 'ip', webTable, 'service-ips');
  await lab.nft('node1', 'flush', 'chain', 'ip', keepTable, keepChain);
  assert.ok(!left.includes(`${clusterIP(web)} . tcp . 80`), `the element is still there:\n${left}`);
  await lab.until('pod-1b', 'tcp', clusterIP(web), 80, ['pod-1a', 'pod-1b', 'pod-2a'], 40_000);
  // keep has one endpoint left (the keep test took the other out).
  await waitFor(
    async () => {
      const seen = [...(await lab.answeredBy('pod-1b', 'tcp', clusterIP(keep), 80, 8))];
      return seen.length === 1 && !seen[0]!.startsWith('!');
    },
    { timeoutMs: 40_000, intervalMs: 200, what: 'Service keep to answer again' },
  );
  assert.match(lab.agentLog('node1'), /service proxy repaired drift/);
});

test('agent status shows service counts and sync times', async () => {
  const st = await lab.agentStatus('node1');
  const s = st.services;
  assert.ok(s, 'no services part in the status');
  assert.ok((s.services ?? 0) >= 10, `services: ${s.services}`);
  assert.ok((s.endpoints ?? 0) > 0 && (s.chains ?? 0) > 0);
  assert.ok(s.lastSync && Date.parse(s.lastSync.at) > 0 && s.lastSync.ms >= 0);
  assert.ok(s.lastFullSync && s.lastFullSync.ms >= 0);
  const text = formatStatus(st);
  assert.match(text, new RegExp(`^services: ${s.services} Services, ${s.endpoints} endpoints, ${s.chains} chains \\(registry /weft\\)$`, 'm'));
  assert.match(text, /^ {2}last sync: \S+, \d+ ms, \d+ change\(s\) \(.+\)$/m);
  assert.match(text, /^ {2}last full sync: \S+, \d+ ms$/m);
});

test('the agent keeps net.bridge.bridge-nf-call-iptables=1 in its node (same-node replies through a Service need it)', async () => {
  const same = await service('same', ['pod-1a']);
  await lab.until('pod-1b', 'tcp', clusterIP(same), 80, ['pod-1a']);
  const read = async () => (await lab.inNode('node1', ['cat', '/proc/sys/net/bridge/bridge-nf-call-iptables'])).trim();
  await lab.inNode('node1', ['sysctl', '-q', '-w', 'net.bridge.bridge-nf-call-iptables=0']);
  assert.equal(await read(), '0');
  await waitFor(async () => (await read()) === '1', { timeoutMs: 30_000, what: 'the agent to set bridge-nf-call-iptables back to 1 on its resync' });
  assert.equal((await lab.agentStatus('node1')).services?.bridgeNf, '1');
  await lab.until('pod-1b', 'tcp', clusterIP(same), 80, ['pod-1a']);
});

test('SIGTERM leaves the rules: connections through a Service keep working while the agent is down and across its restart', async () => {
  const surv = await service('surv', ['pod-2a']);
  const ip = clusterIP(surv);
  await lab.until('pod-2b', 'tcp', ip, 80, ['pod-2a']);
  const first = await lab.open('pod-2b', 'surv', ip, 80);
  assert.ok(first.ok);
  await lab.stopAgent('node2');
  try {
    assert.ok((await lab.tables('node2')).has(TABLE), 'the proxy table went with the agent');
    const a = await lab.again('pod-2b', 'surv');
    assert.equal(a.ok && a.seen.pod, 'pod-2a', `held connection: ${a.ok ? a.seen.pod : a.error}`);
    assert.deepEqual([...(await lab.answeredBy('pod-2b', 'tcp', ip, 80, 6))], ['pod-2a'], 'new connections failed while the agent was down');
  } finally {
    await lab.startAgent('node2');
  }
  const b = await lab.again('pod-2b', 'surv');
  assert.equal(b.ok && b.seen.pod, 'pod-2a', `held connection after the restart: ${b.ok ? b.seen.pod : b.error}`);
  await lab.close('pod-2b', 'surv');
});

test("a node whose lease is gone takes its pods' endpoints with it, and they come back with the lease", async () => {
  const web = await lab.service('web');
  await lab.until('pod-1b', 'tcp', clusterIP(web), 80, ['pod-1a', 'pod-1b', 'pod-2a']);
  await lab.stopAgent('node2');
  try {
    await dropLeasesOf(lab.s, lab.node('node2').ip);
    await lab.until('pod-1b', 'tcp', clusterIP(web), 80, ['pod-1a', 'pod-1b']);
    assert.ok((await lab.agentStatus('node1')).services?.lastSync);
  } finally {
    await lab.startAgent('node2');
  }
  await lab.until('pod-1b', 'tcp', clusterIP(web), 80, ['pod-1a', 'pod-1b', 'pod-2a']);
});

test('weft agent --cleanup removes the weft-proxy table', async () => {
  await lab.stopAgent('node2');
  const r = await lab.cleanupAgent('node2');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, new RegExp(TABLE));
  const left = [...(await lab.tables('node2')).keys()].filter((t) => t.startsWith(TABLE));
  assert.deepEqual(left, [], 'proxy tables left after --cleanup');
});
