import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint, Service } from '../service/types.js';
import type { CtEntry } from '../kernel/conntrack.js';
import { staleFlows, strayFlows } from './conntrack.js';
import { diff, emptyShape, shapeOf, toNftTx, type ProxyOp } from './diff.js';
import { renderTx } from '../kernel/nft.js';
import {
  desiredRuleset,
  baseTables,
  elementId,
  PROXY_TABLE,
  PROXY_TABLES,
  serviceTable,
  SHARDS,
  ruleText,
  serviceRules,
  verdictText,
  type Fragment,
  type ProxyNode,
} from './rules.js';

const node: ProxyNode = { name: 'n1', podNetwork: '10.244.0.0/16' };

const svc = (o: Partial<Service> = {}): Service => ({
  namespace: 'default',
  name: 'web',
  labels: {},
  type: 'ClusterIP',
  clusterIP: '10.96.0.10',
  ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  externalTrafficPolicy: 'Cluster',
  internalTrafficPolicy: 'Cluster',
  uid: 'u1',
  creationTimestamp: '2026-01-01T00:00:00Z',
  ...o,
});

const ep = (
  ip: string,
  nodeName: string,
  state: 'ready' | 'terminating' | 'notready' = 'ready',
  ports: Endpoint['ports'] = [{ name: 'http', port: 8080, protocol: 'TCP' }],
): Endpoint => ({
  ip,
  nodeName,
  conditions: { ready: state === 'ready', serving: state !== 'notready', terminating: state === 'terminating' },
  ports,
});

/** The fragment as text: chain name prefixes (hash dropped) → rule texts, and elements. */
function view(f: Fragment): { chains: Record<string, string[]>; elements: string[] } {
  const short = (n: string) => n.replace(/^(\w+)-[0-9A-F]{8}-/, '$1:');
  const chains: Record<string, string[]> = {};
  for (const [name, rules] of f.chains)
    chains[short(name)] = rules.map((r) =>
      ruleText(r)
        .replace(/(goto |jump |@)(\w+)-[0-9A-F]{8}-/g, '$1$2:')
        .replace(/seed 0x[0-9a-f]{8}/, 'seed S'),
    );
  return {
    chains,
    elements: f.elements.map((e) => `${e.map}: ${e.key.join(' . ')} -> ${short(verdictText(e.value)).replace(/(goto) (\w+)-[0-9A-F]{8}-/, '$1 $2:')}`),
  };
}

describe('serviceRules', () => {
  it('ClusterIP: map element to the service chain, which picks an endpoint by the flow hash, marks hairpin and DNATs', () => {
    const v = view(serviceRules(node, svc(), [ep('10.244.2.5', 'n2'), ep('10.244.1.5', 'n1')]));
    assert.deepEqual(v.elements, ['service-ips: 10.96.0.10 . tcp . 80 -> goto service:default/web/tcp/http']);
    assert.deepEqual(v.chains['service:default/web/tcp/http'], [
      'ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade',
      'jhash ip saddr . th sport mod 2 seed S 0 ip saddr 10.244.1.5 jump mark-for-masquerade',
      'jhash ip saddr . th sport mod 2 seed S 0 meta l4proto tcp dnat to 10.244.1.5:8080',
      'jhash ip saddr . th sport mod 2 seed S 1 ip saddr 10.244.2.5 jump mark-for-masquerade',
      'jhash ip saddr . th sport mod 2 seed S 1 meta l4proto tcp dnat to 10.244.2.5:8080',
    ]);
    assert.equal(Object.keys(v.chains).length, 1);
  });

  it('one endpoint needs no pick; three get hash values 0, 1, 2 with a seed of their own per service port', () => {
    const one = view(serviceRules(node, svc(), [ep('10.244.1.5', 'n1')]));
    assert.deepEqual(one.chains['service:default/web/tcp/http']!.slice(1), [
      'ip saddr 10.244.1.5 jump mark-for-masquerade',
      'meta l4proto tcp dnat to 10.244.1.5:8080',
    ]);
    const f = serviceRules(node, svc(), [ep('10.244.1.5', 'n1'), ep('10.244.1.6', 'n1'), ep('10.244.1.7', 'n1')]);
    const picks = [...f.chains.values()][0]!.flatMap((r) => r.match.filter((m) => m.m === 'pick'));
    assert.deepEqual(
      picks.map((m) => (m.m === 'pick' ? `${m.mod}:${m.value}` : '')),
      ['3:0', '3:0', '3:1', '3:1', '3:2', '3:2'],
    );
    const other = serviceRules(node, svc({ name: 'db' }), [ep('10.244.1.5', 'n1'), ep('10.244.1.6', 'n1')]);
    const seedOf = (x: Fragment) => [...x.chains.values()][0]!.flatMap((r) => r.match).find((m) => m.m === 'pick');
    assert.notDeepEqual(seedOf(f), seedOf(other));
  });

  it('no endpoints: a reject verdict in no-endpoint-services and no chains', () => {
    const f = serviceRules(node, svc(), [ep('10.244.1.5', 'n1', 'notready')]);
    assert.deepEqual(view(f).elements, ['no-endpoint-services: 10.96.0.10 . tcp . 80 -> goto reject-chain']);
    assert.equal(f.chains.size, 0);
  });

  it('terminating endpoints serve only when no endpoint is ready', () => {
    const targets = (f: Fragment) => [...f.chains.values()].flat().flatMap((r) => (r.then.s === 'dnat' ? [`${r.then.ip}:${r.then.port}`] : []));
    assert.deepEqual(targets(serviceRules(node, svc(), [ep('10.244.1.5', 'n1'), ep('10.244.1.6', 'n1', 'terminating')])), ['10.244.1.5:8080']);
    const only = serviceRules(node, svc(), [ep('10.244.1.6', 'n1', 'terminating'), ep('10.244.1.7', 'n1', 'notready')]);
    assert.deepEqual(targets(only), ['10.244.1.6:8080']);
    assert.deepEqual(view(only).elements, ['service-ips: 10.96.0.10 . tcp . 80 -> goto service:default/web/tcp/http']);
  });

  it("internalTrafficPolicy Local: only this node's endpoints; none here drops (others exist)", () => {
    const s = svc({ internalTrafficPolicy: 'Local' });
    const here = view(serviceRules(node, s, [ep('10.244.1.5', 'n1'), ep('10.244.2.5', 'n2')]));
    assert.deepEqual(here.elements, ['service-ips: 10.96.0.10 . tcp . 80 -> goto local:default/web/tcp/http']);
    assert.deepEqual(here.chains['local:default/web/tcp/http'], [
      'ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade',
      'ip saddr 10.244.1.5 jump mark-for-masquerade',
      'meta l4proto tcp dnat to 10.244.1.5:8080',
    ]);
    assert.equal(here.chains['service:default/web/tcp/http'], undefined);
    const none = view(serviceRules(node, s, [ep('10.244.2.5', 'n2')]));
    assert.deepEqual(none.elements, ['no-endpoint-services: 10.96.0.10 . tcp . 80 -> drop']);
  });

  it('NodePort with externalTrafficPolicy Cluster: external chain masquerades and goes to the service chain', () => {
    const s = svc({ type: 'NodePort', ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }] });
    const v = view(serviceRules(node, s, [ep('10.244.2.5', 'n2')]));
    assert.ok(v.elements.includes('service-nodeports: tcp . 30080 -> goto external:default/web/tcp/http'));
    assert.deepEqual(v.chains['external:default/web/tcp/http'], ['jump mark-for-masquerade', 'goto service:default/web/tcp/http']);
  });

  it('NodePort with externalTrafficPolicy Local: no masquerade for outside clients, local endpoints only, drop when none here', () => {
    const s = svc({
      type: 'NodePort',
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }],
    });
    const here = view(serviceRules(node, s, [ep('10.244.1.5', 'n1'), ep('10.244.2.5', 'n2')]));
    assert.deepEqual(here.chains['external:default/web/tcp/http'], [
      'ip saddr 10.244.0.0/16 goto service:default/web/tcp/http',
      'fib saddr type local jump mark-for-masquerade',
      'fib saddr type local goto service:default/web/tcp/http',
      'goto local:default/web/tcp/http',
    ]);
    assert.deepEqual(here.chains['local:default/web/tcp/http'], ['ip saddr 10.244.1.5 jump mark-for-masquerade', 'meta l4proto tcp dnat to 10.244.1.5:8080']);
    const none = view(serviceRules(node, s, [ep('10.244.2.5', 'n2')]));
    assert.ok(none.elements.includes('no-endpoint-nodeports: tcp . 30080 -> drop'));
    assert.ok(none.elements.includes('service-nodeports: tcp . 30080 -> goto external:default/web/tcp/http'));
    assert.ok(none.elements.includes('service-ips: 10.96.0.10 . tcp . 80 -> goto service:default/web/tcp/http'));
    assert.equal(none.chains['external:default/web/tcp/http']!.length, 3);
  });

  it('ClientIP affinity: a timed set per endpoint, checked before the random pick and refreshed on the way through', () => {
    const f = serviceRules(node, svc({ sessionAffinity: 'ClientIP', affinityTimeoutSeconds: 30 }), [ep('10.244.1.5', 'n1'), ep('10.244.2.5', 'n2')]);
    assert.deepEqual([...f.sets.values()], [30, 30]);
    const v = view(f);
    const a = 'affinity:default/web/tcp/http__10.244.1.5/8080@30';
    assert.deepEqual(v.chains['service:default/web/tcp/http']!.slice(1, 3), [
      `ip saddr @${a} ip saddr 10.244.1.5 jump mark-for-masquerade`,
      `ip saddr @${a} meta l4proto tcp update @${a} { ip saddr } dnat to 10.244.1.5:8080`,
    ]);
    assert.equal(
      v.chains['service:default/web/tcp/http']![6],
      `jhash ip saddr . th sport mod 2 seed S 0 meta l4proto tcp update @${a} { ip saddr } dnat to 10.244.1.5:8080`,
    );
  });

  it('headless and ExternalName Services have no rules; endpoints without the port are left out', () => {
    assert.equal(serviceRules(node, svc({ clusterIP: 'None' }), [ep('10.244.1.5', 'n1')]).elements.length, 0);
    const { clusterIP: _, ...rest } = svc();
    assert.equal(serviceRules(node, { ...rest, type: 'ExternalName', externalName: 'example.com' }, []).chains.size, 0);
    const f = serviceRules(node, svc(), [ep('10.244.1.5', 'n1', 'ready', [{ name: 'other', port: 9, protocol: 'TCP' }])]);
    assert.equal(f.elements[0]!.map, 'no-endpoint-services');
  });

  it('desiredRuleset: one fragment per Service, keyed as given', () => {
    const all = desiredRuleset(node, [
      ['default/web', { service: svc(), endpoints: [ep('10.244.1.5', 'n1')] }],
      ['default/db', { service: svc({ name: 'db', clusterIP: '10.96.0.11' }), endpoints: [] }],
    ]);
    assert.deepEqual([...all.keys()], ['default/web', 'default/db']);
    assert.equal(all.get('default/db')!.elements[0]!.map, 'no-endpoint-services');
  });

  it('UDP ports record their endpoints for conntrack cleanup', () => {
    const s = svc({ ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 }] });
    const f = serviceRules(node, s, [ep('10.244.1.5', 'n1', 'ready', [{ name: 'dns', port: 53, protocol: 'UDP' }])]);
    assert.deepEqual(f.udp, [{ clusterIP: '10.96.0.10', port: 53, endpoints: ['10.244.1.5:53'] }]);
  });

  it('chain names fit nft: letters, digits and _ . - / only, below 256 bytes', () => {
    const f = serviceRules(node, svc({ namespace: 'n'.repeat(63), name: 's'.repeat(63) }), [ep('10.244.1.5', 'n1')]);
    for (const name of f.chains.keys()) assert.match(name, /^[a-z][A-Za-z0-9_.\-/]{1,254}$/);
  });

  it('the base: no-endpoint checks in nat hooks before DNAT and masquerading in the front table, nat dispatch in each shard', () => {
    const tables = baseTables();
    assert.equal(tables.length, SHARDS + 1);
    const hooks = (t: (typeof tables)[number]) => t.chains.filter((c) => c.hook).map((c) => `${c.name} ${c.hook!.type} ${c.hook!.hook} ${c.hook!.priority}`);
    assert.deepEqual(hooks(tables[0]!), ['nat-prerouting nat prerouting -110', 'nat-output nat output -110', 'nat-postrouting nat postrouting 100']);
    assert.deepEqual(hooks(tables[1]!), ['nat-prerouting nat prerouting -100', 'nat-output nat output -100']);
    assert.deepEqual(tables[0]!.maps, ['no-endpoint-services', 'no-endpoint-nodeports']);
    assert.deepEqual(tables[5]!.maps, ['service-ips', 'service-nodeports']);
    const shard = tables[1]!.chains;
    assert.ok(shard.find((c) => c.name === 'services')!.rules.some((r) => r.startsWith('fib daddr type local')));
    assert.deepEqual(shard.find((c) => c.name === 'mark-for-masquerade')!.rules, ['meta mark set meta mark | 0x00004000']);
  });

  it('each Service lives in one shard table, the same on every node', () => {
    const t = serviceTable('default', 'web');
    assert.ok(PROXY_TABLES.includes(t) && t !== PROXY_TABLE);
    assert.equal(serviceRules(node, svc(), []).table, t);
    const spread = new Set(Array.from({ length: 200 }, (_, i) => serviceTable('default', `s${i}`)));
    assert.ok(spread.size > SHARDS / 2);
  });
});

describe('diff', () => {
  const a = () => serviceRules(node, svc(), [ep('10.244.1.5', 'n1'), ep('10.244.2.5', 'n2')]);
  const other = () => serviceRules(node, svc({ name: 'db', clusterIP: '10.96.0.11' }), [ep('10.244.1.9', 'n1')]);
  const kinds = (ops: ProxyOp[]) => ops.map((o) => o.op);

  it('from nothing: chains before the rules that jump to them, elements after the chains they name', () => {
    const ops = diff(emptyShape(), [a()]);
    const firstRule = kinds(ops).indexOf('addRule');
    assert.ok(kinds(ops).lastIndexOf('addChain') < firstRule);
    assert.ok(kinds(ops).indexOf('addElement') > kinds(ops).lastIndexOf('addRule'));
    assert.equal(ops.filter((o) => o.op === 'addChain').length, 1);
  });

  it('the same rules: no ops', () => {
    assert.deepEqual(diff(shapeOf([a(), other()]), [a(), other()]), []);
  });

  it('moving one endpoint touches only that Service: its chain is flushed and refilled, nothing else', () => {
    const moved = serviceRules(node, svc(), [ep('10.244.1.6', 'n1'), ep('10.244.2.5', 'n2')]);
    const ops = diff(shapeOf([a(), other()]), [moved, other()]);
    assert.deepEqual(kinds(ops), ['flushChain', 'addRule', 'addRule', 'addRule', 'addRule', 'addRule']);
    assert.ok(ops.every((o) => o.table === serviceTable('default', 'web') && !JSON.stringify(o).includes('/db/')));
  });

  it('a changed verdict is a delete and an add of the element; a gone Service leaves nothing', () => {
    const none = serviceRules(node, svc(), []);
    const ops = diff(shapeOf([a()]), [none]);
    assert.deepEqual(
      ops.filter((o) => o.op === 'addElement' || o.op === 'delElement').map((o) => `${o.op} ${elementId(o as { map: string; key: string[] })}`),
      ['delElement service-ips 10.96.0.10 . tcp . 80', 'addElement no-endpoint-services 10.96.0.10 . tcp . 80'],
    );
    assert.deepEqual(
      ops.filter((o) => o.op.endsWith('Element')).map((o) => o.table),
      [serviceTable('default', 'web'), PROXY_TABLE],
    );
    const gone = diff(shapeOf([a()]), []);
    assert.deepEqual(new Set(kinds(gone)), new Set(['delElement', 'flushChain', 'delChain']));
  });

  it('a chain whose comments differ (edited by hand) is rewritten in place', () => {
    const shape = shapeOf([a()]);
    const [id, chain] = [...shape.chains][0]!;
    shape.chains.set(id, { ...chain, comments: 'deadbeef:0' });
    assert.deepEqual(kinds(diff(shape, [a()])).slice(0, 1), ['flushChain']);
  });

  it('renders as an nft script', () => {
    const text = renderTx(toNftTx(diff(emptyShape(), [a()])));
    assert.match(text, /^add chain ip weft-proxy-\d+ service-[0-9A-F]{8}-default\/web\/tcp\/http$/m);
    assert.match(text, /add element ip weft-proxy-\d+ service-ips \{ 10\.96\.0\.10 \. tcp \. 80 : goto service-/);
    assert.match(text, /jhash ip saddr \. th sport mod 2 seed 0x[0-9a-f]{8} 0 meta l4proto tcp dnat to 10\.244\.1\.5:8080 comment "[0-9a-f]{8}:2"/);
  });
});

describe('conntrack', () => {
  const udp = (eps: Endpoint[], nodePort?: number) =>
    serviceRules(
      node,
      svc({
        type: nodePort ? 'NodePort' : 'ClusterIP',
        ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 53, ...(nodePort ? { nodePort } : {}) }],
      }),
      eps,
    );
  const dns = (ip: string) => ep(ip, 'n1', 'ready', [{ name: 'dns', port: 53, protocol: 'UDP' }]);

  it('an endpoint that goes away: its flows to the ClusterIP and the NodePort', () => {
    assert.deepEqual(staleFlows(udp([dns('10.244.1.5'), dns('10.244.1.6')], 30053), udp([dns('10.244.1.6')], 30053)), [
      { origDst: '10.96.0.10', origDport: 53, replySrc: '10.244.1.5', replySport: 53 },
      { origDport: 30053, replySrc: '10.244.1.5', replySport: 53 },
    ]);
  });

  it('from no endpoints to some: the flows never DNATed; a gone Service: every flow to the ClusterIP port (and every DNATed one to the NodePort)', () => {
    const undnated = { origDst: '10.96.0.10', origDport: 53, replySrc: '10.96.0.10', replySport: 53 };
    assert.deepEqual(staleFlows(udp([]), udp([dns('10.244.1.5')])), [undnated]);
    assert.deepEqual(staleFlows(udp([], 30053), udp([dns('10.244.1.5')], 30053)), [undnated, { origDport: 30053, replySport: 30053 }]);
    assert.deepEqual(staleFlows(undefined, udp([dns('10.244.1.5')])), [undnated]);
    assert.deepEqual(staleFlows(udp([dns('10.244.1.5')]), undefined), [{ origDst: '10.96.0.10', origDport: 53 }]);
    assert.deepEqual(staleFlows(udp([dns('10.244.1.5')], 30053), undefined), [
      { origDst: '10.96.0.10', origDport: 53 },
      { origDport: 30053, dstNat: true },
    ]);
    assert.deepEqual(staleFlows(udp([dns('10.244.1.5')]), udp([dns('10.244.1.5')])), []);
  });

  it('full check: flows whose reply is not from a current endpoint', () => {
    const entry = (sport: number, dst: string, dport: number, replySrc: string): CtEntry => ({
      proto: 17,
      orig: { src: '10.244.1.9', dst, sport, dport },
      reply: { src: replySrc, dst: '10.244.1.9', sport: 53, dport: sport },
      dstNat: replySrc !== dst,
      zone: 0,
      id: sport,
    });
    const entries = [
      entry(40000, '10.96.0.10', 53, '10.244.1.5'),
      entry(40001, '10.96.0.10', 53, '10.244.1.7'),
      entry(40002, '10.244.1.3', 53, '10.244.1.3'),
      entry(40003, '198.18.0.11', 30053, '10.244.1.7'),
      entry(40004, '198.18.0.11', 30053, '198.18.0.11'),
    ];
    assert.deepEqual(strayFlows(entries, udp([dns('10.244.1.5')], 30053).udp), [entries[1], entries[3]]);
  });
});
