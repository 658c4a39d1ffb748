/**
 * Routed mode ("mode": "routed"): a bridgeless pod as Calico wires one. The pod has a /32, a default
 * route via 169.254.1.1 onlink and a permanent neighbour for it; the node has the host veth with a
 * /32 route and a permanent neighbour to the pod, and an unreachable route for the rest of its
 * subnet. ADD, CHECK, DEL (idempotent), the rollback of a failed ADD and GC, on real namespaces.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CniLab, iface, parseResult, reservations } from './cni-support.js';
import { neighbours, routes } from './ipj.js';

let lab: CniLab;

before(async () => {
  lab = await CniLab.create();
});
after(() => lab?.destroy());

const NET = 'routed';
const GW = '169.254.1.1';
const conf = (o: Record<string, unknown> = {}) => ({
  cniVersion: '1.1.0',
  name: NET,
  type: 'weft',
  mode: 'routed',
  socket: join(lab.dir, 'nothing-listens.sock'),
  ipMasq: true,
  mtu: 1400,
  ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.31.0.0/24' }]], routes: [{ dst: '10.31.0.0/16' }] },
  ...o,
});
const call = (command: string, id: string, netns?: string) => ({ command, containerId: id, ...(netns ? { netns } : {}), ifname: 'eth0' });
const linkOf = async (name: string) => (await lab.hostLinks()).find((l) => l.ifname === name);
const inPod = (pod: string, argv: string[]) => lab.topo.exec(pod, argv);

describe('routed mode', () => {
  it('ADD wires a bridgeless pod; pods and the node reach each other; CHECK passes and catches a missing neighbour; DEL undoes it, twice', async () => {
    const p1 = await lab.pod('r1');
    const p2 = await lab.pod('r2');
    const r1 = parseResult(await lab.ok('weft', call('ADD', 'r1', p1.path), conf()));
    const r2 = parseResult(await lab.ok('weft', call('ADD', 'r2', p2.path), conf()));

    assert.equal(r1.cniVersion, '1.1.0');
    assert.equal(r1.interfaces?.length, 2, 'interfaces: the host veth and the pod end, no bridge');
    const [veth, cont] = [iface(r1, 0), iface(r1, 1)];
    assert.match(veth.name, /^veth[0-9a-f]{8}$/);
    assert.equal(veth.sandbox, undefined);
    assert.equal(cont.sandbox, p1.path);
    assert.deepEqual(r1.ips, [{ address: '10.31.0.2/32', gateway: GW, interface: 1 }]);
    assert.deepEqual(r1.routes, [
      { dst: '0.0.0.0/0', gw: GW },
      { dst: '10.31.0.0/16', gw: GW },
    ]);

    // The node: the host veth up, no master, no address; a /32 route and a permanent neighbour to the pod.
    const host = await linkOf(veth.name);
    assert.ok(host, 'the host veth exists');
    assert.equal(host.master, undefined, 'no bridge');
    assert.equal(host.address, veth.mac);
    assert.equal(host.mtu, 1400);
    assert.ok(host.flags.includes('UP'));
    assert.equal(host.ifalias, `weft:${NET}:r1:eth0`, 'the alias GC finds it by');
    assert.equal((await lab.hostLinks()).filter((l) => l.linkinfo?.info_kind === 'bridge').length, 0, 'no bridge on the node');
    assert.deepEqual(
      (await lab.podAddrs(lab.hostPath, veth.name))[0]!.addr_info.filter((a) => a.family === 'inet'),
      [],
    );
    const hostRoutes = await routes(lab.hostPath);
    assert.ok(
      hostRoutes.some((r) => r.dst === '10.31.0.2' && r.dev === veth.name && r.scope === 'link'),
      JSON.stringify(hostRoutes),
    );
    assert.ok(
      hostRoutes.some((r) => (r as { type?: string }).type === 'unreachable' && r.dst === '10.31.0.0/24'),
      `an unreachable route for the node's subnet: ${JSON.stringify(hostRoutes)}`,
    );
    const hn = (await neighbours(lab.hostPath, veth.name)).find((n) => n.dst === '10.31.0.2');
    assert.equal(hn?.lladdr, cont.mac);
    assert.ok(hn?.state?.includes('PERMANENT'), JSON.stringify(hn));

    // The pod: a /32, a default route via the link-local gateway onlink, a permanent neighbour for it.
    const [eth0] = await lab.podAddrs(p1.path, 'eth0');
    assert.equal(eth0!.address, cont.mac);
    assert.deepEqual(
      eth0!.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
      ['10.31.0.2/32'],
    );
    const podRoutes = await lab.podRoutes(p1.path);
    const def = podRoutes.find((r) => r.dst === 'default');
    assert.equal(def?.gateway, GW, JSON.stringify(podRoutes));
    assert.equal(def?.dev, 'eth0');
    assert.ok(def?.flags?.includes('onlink'), JSON.stringify(def));
    const pn = (await neighbours(p1.path, 'eth0')).find((n) => n.dst === GW);
    assert.equal(pn?.lladdr, veth.mac);
    assert.ok(pn?.state?.includes('PERMANENT'), JSON.stringify(pn));
    assert.equal((await lab.topo.exec('host', ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
    assert.deepEqual(await lab.masqAddrs(), ['10.31.0.2', '10.31.0.3']);

    // Traffic: pod to pod through the node, node to pod, pod to itself, and no ARP on either side.
    for (const [from, to] of [
      [p1.name, '10.31.0.3'],
      [p2.name, '10.31.0.2'],
    ] as const) {
      const ping = await inPod(from, ['ping', '-c', '1', '-W', '2', to]);
      assert.equal(ping.code, 0, `${from} → ${to}: ${ping.stdout}${ping.stderr}`);
    }
    // The node answers from an address of its own (a real node's underlay IP), and its default route leads away.
    const sink = await lab.topo.exec('host', [
      'sh',
      '-c',
      'ip link add wsink type veth peer name wsinkp && ip addr add 192.0.2.1/24 dev wsink && ip link set wsink up && ip link set wsinkp up && ip route add default via 192.0.2.254',
    ]);
    assert.equal(sink.code, 0, sink.stderr);
    const nodePing = await lab.topo.exec('host', ['ping', '-c', '1', '-W', '2', '10.31.0.2']);
    assert.equal(nodePing.code, 0, `node → pod: ${nodePing.stdout}`);
    const dynamic = [...(await neighbours(lab.hostPath, veth.name)), ...(await neighbours(p1.path, 'eth0'))].filter((n) => !n.state?.includes('PERMANENT'));
    assert.deepEqual(dynamic, [], 'no neighbour was learnt by ARP');

    // An address of the subnet no pod holds is unreachable at once: it never leaves by a default route.
    const get = await lab.topo.exec('host', ['ip', 'route', 'get', '10.31.0.200']);
    assert.notEqual(get.code, 0, `route get of a free pod address: ${get.stdout}`);
    assert.match(get.stderr, /unreachable|No route to host/i);
    const lost = await inPod(p1.name, ['ping', '-c', '1', '-W', '2', '10.31.0.200']);
    assert.notEqual(lost.code, 0);
    assert.match(lost.stdout, /[Uu]nreachable/, 'the pod is told at once (ICMP host unreachable)');

    await lab.ok('weft', call('CHECK', 'r1', p1.path), conf({ prevResult: r1 }));
    const rm = await lab.topo.exec('host', ['ip', 'neigh', 'del', '10.31.0.2', 'dev', veth.name]);
    assert.equal(rm.code, 0, rm.stderr);
    await lab.fails('weft', call('CHECK', 'r1', p1.path), conf({ prevResult: r1 }), 7, /neighbour 10\.31\.0\.2/);
    await lab.ok('weft', call('DEL', 'r2', p2.path), conf({ prevResult: r2 }));
    const r2b = parseResult(await lab.ok('weft', call('ADD', 'r2', p2.path), conf()));
    const gwDel = await inPod(p2.name, ['ip', 'neigh', 'del', GW, 'dev', 'eth0']);
    assert.equal(gwDel.code, 0, gwDel.stderr);
    await lab.fails('weft', call('CHECK', 'r2', p2.path), conf({ prevResult: r2b }), 7, /169\.254\.1\.1/);

    await lab.ok('weft', call('DEL', 'r1', p1.path), conf({ prevResult: r1 }));
    assert.equal(await linkOf(veth.name), undefined, 'DEL removed the host veth');
    const after = await routes(lab.hostPath);
    assert.ok(!after.some((r) => r.dst === '10.31.0.2'), 'and with it the /32 route');
    assert.deepEqual(await lab.podAddrs(p1.path).then((ls) => ls.map((l) => l.ifname)), ['lo']);
    assert.deepEqual(await lab.masqAddrs(), [r2b.ips[0]!.address.split('/')[0]]);
    assert.ok(!reservations(join(lab.dataDir, NET)).has('10.31.0.2'));
    await lab.ok('weft', call('DEL', 'r1', p1.path), conf({ prevResult: r1 }));
    await lab.ok('weft', call('DEL', 'r1'), conf());
    await lab.ok('weft', call('DEL', 'r2', p2.path), conf());
    assert.equal(reservations(join(lab.dataDir, NET)).size, 0);
    await lab.topo.exec('host', ['ip', 'link', 'del', 'wsink']);
  });

  it('a failed ADD leaves nothing: no veth, route, neighbour, reservation or masquerade element', async () => {
    const p = await lab.pod('rb');
    // Someone else's route to the one address IPAM can hand out makes the /32 route fail, after the veth exists.
    const next = '10.31.0.50';
    const one = (o: Record<string, unknown> = {}) =>
      conf({ ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.31.0.0/24', rangeStart: next, rangeEnd: next }]] }, ...o });
    const before = await lab.hostState();
    const masqBefore = await lab.masqAddrs();
    const taken = await lab.topo.exec('host', ['ip', 'route', 'add', `${next}/32`, 'dev', 'lo']);
    assert.equal(taken.code, 0, taken.stderr);
    await lab.fails('weft', call('ADD', 'rb', p.path), one(), 102, /File exists|exists/);
    await lab.topo.exec('host', ['ip', 'route', 'del', `${next}/32`, 'dev', 'lo']);
    const now = await lab.hostState();
    assert.deepEqual(now.links, before.links, 'no link left');
    assert.deepEqual(now.addrs, before.addrs);
    assert.deepEqual(await lab.masqAddrs(), masqBefore);
    assert.ok(!reservations(join(lab.dataDir, NET)).has(next), 'the address was released');
    assert.deepEqual(await lab.podAddrs(p.path).then((ls) => ls.map((l) => l.ifname)), ['lo'], 'nothing in the pod');
    assert.ok(!(await routes(lab.hostPath)).some((r) => r.dst === next), 'no route to it');
    // And the same pod then wires fine.
    const r = parseResult(await lab.ok('weft', call('ADD', 'rb', p.path), one()));
    await lab.ok('weft', call('CHECK', 'rb', p.path), one({ prevResult: r }));
    await lab.ok('weft', call('DEL', 'rb', p.path), one({ prevResult: r }));
  });

  it('GC removes the veths (with their routes) and reservations no valid attachment owns', async () => {
    const keep = await lab.pod('gk');
    const drop = await lab.pod('gd');
    const rk = parseResult(await lab.ok('weft', call('ADD', 'gk', keep.path), conf()));
    const rd = parseResult(await lab.ok('weft', call('ADD', 'gd', drop.path), conf()));
    await lab.ok('weft', { command: 'GC' }, conf({ 'cni.dev/valid-attachments': [{ containerID: 'gk', ifname: 'eth0' }] }));
    assert.ok(await linkOf(iface(rk, 0).name), 'the valid attachment keeps its veth');
    assert.equal(await linkOf(iface(rd, 0).name), undefined, 'GC removed the other');
    const left = reservations(join(lab.dataDir, NET));
    assert.deepEqual([...left.keys()], [rk.ips[0]!.address.split('/')[0]]);
    assert.ok(!(await routes(lab.hostPath)).some((r) => r.dst === rd.ips[0]!.address.split('/')[0]), 'its /32 route went with it');
    await lab.ok('weft', call('DEL', 'gk', keep.path), conf({ prevResult: rk }));
  });

  it('refuses an unknown mode', async () => {
    const p = await lab.pod('bad');
    await lab.fails('weft', call('ADD', 'bad', p.path), conf({ mode: 'tunnel' }), 7, /"mode"/);
  });
});
