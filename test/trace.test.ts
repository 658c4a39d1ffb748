import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { listNetns } from '../src/kernel/netns.js';
import { readState } from '../src/lab/state.js';
import { formatTrace, traceLab } from '../src/trace/trace.js';
import type { TraceHop, TraceResult } from '../src/trace/types.js';
import { Topology } from '../src/topo/topology.js';
import { WEFT, weft } from './lab-cli.js';

// weft trace on real labs: a probe through real agents, bridges, tunnels and nftables, watched by nft monitor trace.
const BACKENDS = { vxlan: ['--backend', 'vxlan'], 'host-gw': ['--backend', 'host-gw'], udp: ['--backend', 'udp'], macvlan: ['--mode', 'underlay'] } as const;
type Kind = keyof typeof BACKENDS;

let topo: Topology;
const labs = {} as Record<Kind, string>;

function weftAsync(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [WEFT, ...args]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

const inNs = (ns: string, ...argv: string[]) => {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${argv.join(' ')} in ${ns}: ${r.stderr}`);
  return r.stdout;
};

/** No trace table is left in any namespace of the lab. */
function noTraceTables(lab: string): void {
  for (const ns of listNetns().filter((n) => n.startsWith(`wl.${lab}.`)))
    assert.doesNotMatch(inNs(ns, 'nft', 'list', 'tables'), /weft-trace/, `${ns} keeps a trace table`);
}

const observedAt = (r: TraceResult, where: string) => r.hops.filter((h) => h.where === where && h.observed);
const hop = (r: TraceResult, f: (h: TraceHop) => boolean, what: string) => {
  const h = r.hops.find(f);
  assert.ok(h, `${what}:\n${formatTrace(r)}`);
  return h;
};

before(async () => {
  topo = await Topology.create();
  const ups = (Object.keys(BACKENDS) as Kind[]).map(async (kind, i) => {
    labs[kind] = `${topo.id}-${i}`;
    const r = await weftAsync('lab', 'up', '--name', labs[kind], '--nodes', '2', '--pods-per-node', '1', ...BACKENDS[kind]);
    assert.equal(r.code, 0, `${kind}: ${r.out}`);
  });
  await Promise.all(ups);
});

after(async () => {
  for (const lab of Object.values(labs)) weft('lab', 'down', '--name', lab);
  await topo.destroy();
  assert.deepEqual(
    listNetns().filter((n) => n.includes(topo.id)),
    [],
    'lab down left namespaces',
  );
});

for (const kind of Object.keys(BACKENDS) as Kind[]) {
  test(`${kind}: pod → pod across nodes, every hop observed where the kernel sees the packet`, async () => {
    const s = readState(labs[kind]);
    const r = await traceLab(s, 'pod-1a', 'pod-2a');
    const text = formatTrace(r);
    assert.equal(r.outcome, 'delivered', text);
    assert.equal(r.backend, kind);
    hop(r, (h) => h.where === 'pod-1a' && h.kind === 'route' && h.observed && h.source === 'ip route get', 'the source pod routes it');
    hop(r, (h) => h.where === 'pod-1a' && h.kind === 'pod-eth0' && h.observed && h.packet?.dst === s.pods[1]!.ip, 'it leaves pod-1a eth0');
    const last = r.hops[r.hops.length - 1]!;
    assert.equal(last.where, 'pod-2a', text);
    assert.equal(last.kind, 'deliver');
    assert.ok(last.observed);
    const [n1, n2] = s.nodes;
    if (kind === 'macvlan') {
      hop(r, (h) => h.where === 'underlay' && h.kind === 'bridge' && h.observed && /port1 → port2/.test(h.summary), 'the underlay switch forwards it');
      assert.ok(
        r.hops.some((h) => h.where === 'node1' && !h.observed),
        'the node hop is marked inferred',
      );
    } else {
      hop(r, (h) => h.where === 'node1' && h.kind === 'veth' && h.observed && /host end of pod-1a/.test(h.summary), 'it enters node1 through the pod veth');
      hop(r, (h) => h.where === 'node2' && h.kind === 'bridge' && h.observed && /host end of pod-2a/.test(h.summary), 'node2 bridges it to pod-2a');
      assert.ok(observedAt(r, 'node2').length >= 3, text);
      assert.ok(
        r.hops.some((h) => h.kind === 'underlay' && !h.observed),
        'the switch between nodes is inferred',
      );
    }
    if (kind === 'vxlan') {
      const e = hop(r, (h) => h.kind === 'encap' && h.observed, 'VXLAN encapsulation');
      assert.deepEqual(e.packet?.outer && { src: e.packet.outer.src, dst: e.packet.outer.dst, dport: e.packet.outer.dport, vni: e.packet.outer.vni }, {
        src: n1!.ip,
        dst: n2!.ip,
        dport: 8472,
        vni: 1,
      });
      hop(
        r,
        (h) => h.where === 'node2' && h.verdict?.table === 'ip weft' && h.verdict.chain === 'raw-prerouting' && /vxlan_peers/.test(h.verdict.rule ?? ''),
        'the forged-VXLAN filter lets a leased peer in',
      );
      hop(r, (h) => h.where === 'node2' && h.kind === 'decap' && h.dev === 'flannel.1', 'flannel.1 decapsulates');
    }
    if (kind === 'udp') {
      const e = hop(r, (h) => h.kind === 'encap' && h.observed, 'the udp backend datagram');
      assert.equal(e.packet?.outer?.dport, 8285);
      hop(r, (h) => h.where === 'node2' && h.kind === 'decap' && h.dev === 'flannel0', 'the agent writes it into flannel0');
    }
    if (kind === 'host-gw') {
      hop(r, (h) => h.where === 'node1' && h.kind === 'route' && h.summary.includes(`via ${n2!.ip} dev eth0`), "host-gw's next hop is node2");
      assert.ok(!r.hops.some((h) => h.kind === 'encap'), 'host-gw does not encapsulate');
    }
    noTraceTables(labs[kind]);
  });
}

test('pod → Service: the DNAT rule and the endpoint conntrack names, then the path to it (CLI, --json and text)', () => {
  const lab = labs.vxlan;
  const j = weft('trace', 'pod-1a', 'echo', '--name', lab, '--json');
  assert.equal(j.code, 0, j.out);
  const r = JSON.parse(j.stdout) as TraceResult;
  assert.equal(r.dst.kind, 'service');
  assert.equal(r.dst.name, 'default/echo');
  assert.ok(r.endpoint?.pod, formatTrace(r));
  const dnat = hop(r, (h) => h.where === 'node1' && h.verdict?.action === 'dnat' && h.kind === 'nft', 'the proxy DNAT rule');
  assert.match(dnat.verdict!.rule!, new RegExp(`dnat to ${r.endpoint.ip.replace(/\./g, '\\.')}:80`));
  hop(r, (h) => h.kind === 'conntrack' && h.source === 'conntrack table (ctnetlink)' && h.packet?.dst === r.endpoint!.ip, 'conntrack names the endpoint');
  assert.equal(r.hops[r.hops.length - 1]!.where, r.endpoint.pod);
  const t = weft('trace', 'pod-1a', 'default/echo', '--name', lab, '--proto', 'udp');
  assert.equal(t.code, 0, t.out);
  assert.match(t.out, /endpoint chosen by the DNAT: 10\.244\.\d+\.\d+:80 \(pod-\d\w\)/);
  assert.match(t.out, /● .*conntrack/);
  noTraceTables(lab);
});

test('outside → NodePort: the switch is traced, the node DNATs and masquerades, the path goes on to the endpoint', () => {
  const lab = labs.vxlan;
  const file = join(topo.dir, 'nodeport.yaml');
  writeFileSync(
    file,
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector:\n    app: echo\n  ports:\n    - port: 8080\n      targetPort: 80\n      nodePort: 30080\n',
  );
  const applied = weft('lab', 'apply', '-f', file, '--name', lab);
  assert.equal(applied.code, 0, applied.out);
  const j = weft('trace', 'outside', 'node1', '--port', '30080', '--name', lab, '--json');
  assert.equal(j.code, 0, j.out);
  const r = JSON.parse(j.stdout) as TraceResult;
  hop(r, (h) => h.where === 'underlay' && h.kind === 'bridge' && h.observed && /outside → port1/.test(h.summary), 'the switch forwards it to node1');
  hop(r, (h) => h.where === 'node1' && h.verdict?.action === 'dnat', 'node1 DNATs the NodePort');
  hop(r, (h) => h.where === 'node1' && h.verdict?.action === 'masquerade', 'and masquerades it');
  assert.ok(r.endpoint?.pod, formatTrace(r));
  const last = r.hops[r.hops.length - 1]!;
  assert.equal(last.where, r.endpoint.pod, formatTrace(r));
  assert.equal(last.kind, 'deliver');
  assert.equal(last.packet?.dport, 80);
  noTraceTables(lab);
});

test('a drop rule added by hand in a node is named, and the trace ends there', async () => {
  const lab = labs.vxlan;
  const s = readState(lab);
  const ns = s.nodes[1]!.ns;
  inNs(
    ns,
    'nft',
    `add table ip handmade
add chain ip handmade forward { type filter hook forward priority 0; policy accept; }
add rule ip handmade forward ip daddr ${s.pods[1]!.ip} tcp dport 80 drop comment "blocked by hand"`,
  );
  try {
    const r = await traceLab(s, 'pod-1a', 'pod-2a');
    const text = formatTrace(r);
    assert.equal(r.outcome, 'dropped', text);
    const last = r.hops[r.hops.length - 1]!;
    assert.equal(last.where, 'node2');
    assert.equal(last.verdict?.action, 'drop');
    assert.equal(last.verdict?.table, 'ip handmade');
    assert.equal(last.verdict?.chain, 'forward');
    assert.equal(typeof last.verdict?.handle, 'number');
    assert.match(r.droppedBy ?? '', /ip handmade forward rule ".*drop comment \\?"blocked by hand\\?"" \(handle \d+\) in node2/);
    assert.match(text, /✗ node2 .*ip handmade forward: drop/);
    assert.ok(!r.hops.some((h) => h.where === 'pod-2a'), 'nothing after the drop');
    const cli = weft('trace', 'pod-1a', 'pod-2a', '--name', lab);
    assert.equal(cli.code, 1, cli.out);
    assert.match(cli.out, /DROPPED by ip handmade forward/);
  } finally {
    inNs(ns, 'nft', 'delete table ip handmade');
  }
  noTraceTables(lab);
});

test("a chain's drop policy is named (a pod that drops all input)", async () => {
  const lab = labs.vxlan;
  const s = readState(lab);
  const ns = s.pods[1]!.ns;
  inNs(ns, 'nft', 'add table ip guard\nadd chain ip guard input { type filter hook input priority 0; policy drop; }');
  try {
    const r = await traceLab(s, 'pod-1a', 'pod-2a', { proto: 'udp' });
    const last = r.hops[r.hops.length - 1]!;
    assert.equal(r.outcome, 'dropped', formatTrace(r));
    assert.deepEqual(last.verdict, { action: 'drop', table: 'ip guard', chain: 'input', policy: true });
    assert.equal(r.droppedBy, 'ip guard input policy drop in pod-2a');
  } finally {
    inNs(ns, 'nft', 'delete table ip guard');
  }
  noTraceTables(lab);
});

test('a missing route in the source pod is named', async () => {
  const lab = labs.vxlan;
  const s = readState(lab);
  const pod = s.pods[0]!;
  const gw = s.nodes[0]!.subnet!.replace(/\/\d+$/, '');
  inNs(pod.ns, 'ip', 'route', 'del', 'default');
  inNs(pod.ns, 'ip', 'route', 'del', '10.244.0.0/16');
  try {
    const r = await traceLab(s, pod.name, 'pod-2a', { proto: 'udp' });
    assert.equal(r.outcome, 'dropped', formatTrace(r));
    assert.equal(r.hops.length, 1);
    assert.equal(r.hops[0]!.kind, 'route');
    assert.match(r.droppedBy ?? '', new RegExp(`no route to ${s.pods[1]!.ip.replace(/\./g, '\\.')} in ${pod.name} \\(ip route get: Network is unreachable\\)`));
  } finally {
    // onlink: with the lab's static neighbours the pod's own /24 goes via the gateway too, so no connected route makes it on-link.
    inNs(pod.ns, 'ip', 'route', 'add', '10.244.0.0/16', 'via', gw, 'dev', 'eth0', 'onlink');
    inNs(pod.ns, 'ip', 'route', 'add', 'default', 'via', gw, 'dev', 'eth0', 'onlink');
  }
  noTraceTables(lab);
});

test('an aborted trace (SIGINT in the CLI) removes its tables', async () => {
  const lab = labs.vxlan;
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('interrupted')), 300);
  await assert.rejects(traceLab(readState(lab), 'pod-1a', 'pod-2a', { signal: ac.signal }), /interrupted/);
  noTraceTables(lab);
});

test('usage: an unknown SRC or DST names what the lab has; a bad --proto is a usage error', () => {
  const r = weft('trace', 'pod-1a', 'nosuch', '--name', labs.vxlan);
  assert.equal(r.code, 1);
  assert.match(r.out, /DST "nosuch" is not a pod, node, Service or outside of lab .*; it has pod-1a, pod-2a, node1, node2, outside/);
  const u = weft('trace', 'pod-1a', 'pod-2a', '--proto', 'sctp', '--name', labs.vxlan);
  assert.equal(u.code, 2, u.out);
});
