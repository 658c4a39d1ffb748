/**
 * The kernel door against a real kernel: ops applied over rtnetlink (and the tools for TUN and
 * nftables) in disposable namespaces, read back with iproute2 (test/ipj.ts) as the independent
 * oracle, and Weft's own netlink dumps compared with that oracle.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { applied, concernsNetlinkPart, readActual, reconcile, sameKernel } from '../src/backend/reconcile.js';
import { VxlanBackend } from '../src/backend/vxlan.js';
import { parseCidr } from '../src/ip/cidr.js';
import { KernelError } from '../src/kernel/errors.js';
import { elementsOnly } from '../src/kernel/nfnl.js';
import { nftTx } from '../src/kernel/nft.js';
import * as op from '../src/kernel/ops.js';
import { apply, Plan } from '../src/kernel/plan.js';
import * as state from '../src/kernel/state.js';
import { RtnlChanges } from '../src/kernel/watch.js';
import { Topology } from '../src/topo/topology.js';
import * as ipj from './ipj.js';

let topo: Topology;
let a: string;
let b: string;

before(async () => {
  topo = await Topology.create();
  a = await topo.netns('a');
  b = await topo.netns('b');
  await apply(
    new Plan().add(
      op.addVeth({ ns: a, name: 'up0', peer: { name: 'eth0', netns: b } }),
      op.addAddr({ ns: a, addr: '198.18.5.1/24', dev: 'up0' }),
      op.setLink({ ns: a, dev: 'up0', up: true }),
    ),
  );
});

after(async () => {
  await topo?.destroy();
});

const kindOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'none';
  } catch (e) {
    assert.ok(e instanceof KernelError, String(e));
    return e.kind;
  }
};

describe('links over rtnetlink', () => {
  it('a bridge and a veth pair across namespaces, with MTU, MACs, master, alias, hairpin and up', async () => {
    await apply(
      new Plan().add(
        op.addBridge({ ns: a, name: 'br0', mac: '02:00:00:00:01:01', mtu: 1400 }),
        op.addVeth({ ns: a, name: 'v1', mtu: 1400, mac: '02:00:00:00:01:02', peer: { name: 'p1', netns: b, mtu: 1400, mac: '02:00:00:00:01:03' } }),
        op.setLink({ ns: a, dev: 'br0', up: true }),
        op.setLink({ ns: a, dev: 'v1', master: 'br0', alias: 'weft:test one', up: true, hairpin: true }),
      ),
    );
    const la = await ipj.links(a);
    const br = la.find((l) => l.ifname === 'br0')!;
    assert.equal(br.linkinfo?.info_kind, 'bridge');
    assert.equal(br.address, '02:00:00:00:01:01');
    assert.equal(br.mtu, 1400);
    const v1 = la.find((l) => l.ifname === 'v1')!;
    assert.equal(v1.master, 'br0');
    assert.equal(v1.ifalias, 'weft:test one');
    assert.ok(v1.flags.includes('UP'));
    assert.equal(v1.linkinfo?.info_slave_data?.hairpin, true);
    const p1 = (await ipj.links(b)).find((l) => l.ifname === 'p1')!;
    assert.equal(p1.address, '02:00:00:00:01:03');
    assert.equal(p1.mtu, 1400);

    await apply(new Plan().add(op.setLink({ ns: a, dev: 'v1', master: null, up: false })));
    const after = (await ipj.links(a)).find((l) => l.ifname === 'v1')!;
    assert.equal(after.master, undefined);
    assert.ok(!after.flags.includes('UP'));
  });

  it('a VXLAN device with its VNI, local address, underlay device, port and learning off', async () => {
    await apply(
      new Plan().add(op.addVxlan({ ns: a, name: 'flannel.7', vni: 7, local: '198.18.5.1', dev: 'up0', port: 8472, mac: '02:00:00:00:07:07', mtu: 1450 })),
    );
    const l = (await ipj.links(a)).find((x) => x.ifname === 'flannel.7')!;
    assert.equal(l.linkinfo?.info_kind, 'vxlan');
    const d = l.linkinfo?.info_data;
    assert.ok(d);
    assert.equal(d.id, 7);
    assert.equal(d.local, '198.18.5.1');
    assert.equal(d.link, 'up0');
    assert.equal(d.port, 8472);
    assert.equal(d.learning, false);
    assert.equal(l.address, '02:00:00:00:07:07');
    assert.equal(l.mtu, 1450);
  });

  it('a macvlan created straight into another namespace, and a TUN device', async () => {
    await apply(new Plan().add(op.addMacvlan({ ns: a, name: 'mv0', parent: 'up0', netns: b, mac: '02:00:00:00:08:08' }), op.addTun({ ns: a, name: 'tun9' })));
    const mv = (await ipj.links(b)).find((l) => l.ifname === 'mv0')!;
    assert.equal(mv.linkinfo?.info_kind, 'macvlan');
    assert.equal(mv.linkinfo?.info_data?.mode, 'bridge');
    const tun = (await ipj.links(a)).find((l) => l.ifname === 'tun9')!;
    assert.equal(tun.linkinfo?.info_kind, 'tun');
    assert.equal(tun.linkinfo?.info_data?.pi, false);
  });

  it('errors are typed from the errno: exists, missing; tolerate skips exactly those', async () => {
    assert.equal(await kindOf(apply(new Plan().add(op.addBridge({ ns: a, name: 'br0' })))), 'exists');
    assert.equal(await kindOf(apply(new Plan().add(op.delLink({ ns: a, dev: 'nosuch0' })))), 'missing');
    assert.equal(await kindOf(apply(new Plan().add(op.setLink({ ns: a, dev: 'nosuch0', up: true })))), 'missing');
    assert.equal(await kindOf(apply(new Plan().add(op.addAddr({ ns: a, addr: '10.9.9.9/32', dev: 'nosuch0' })))), 'missing');
    assert.equal(await kindOf(apply(new Plan().add(op.delAddr({ ns: a, addr: '10.9.9.9/32', dev: 'up0' })))), 'missing');
    assert.equal(await kindOf(apply(new Plan().add(op.delRoute({ ns: a, dst: '10.99.0.0/16' })))), 'missing');
    assert.equal(await kindOf(apply(new Plan().add(op.addTun({ ns: a, name: 'br0' })))), 'busy', 'iproute2 fallback: a TUN named like a bridge');
    const e = await apply(new Plan().add(op.addBridge({ ns: a, name: 'br0' }))).catch((x: unknown) => x);
    assert.ok(e instanceof KernelError && e.op === `ip -n ${topo.name('a')} link add name br0 type bridge` && e.errno === 17, String(e));
    // Tolerated failures are skipped and the plan goes on.
    await apply(
      new Plan().add(
        op.addBridge({ ns: a, name: 'br0', tolerate: 'exists' }),
        op.delLink({ ns: a, dev: 'nosuch0', tolerate: 'missing' }),
        op.addBridge({ ns: a, name: 'br9' }),
      ),
    );
    assert.ok((await ipj.links(a)).some((l) => l.ifname === 'br9'));
    // An untolerated failure stops the plan there.
    await assert.rejects(apply(new Plan().add(op.addBridge({ ns: a, name: 'br9' }), op.addBridge({ ns: a, name: 'br10' }))), KernelError);
    assert.ok(!(await ipj.links(a)).some((l) => l.ifname === 'br10'));
  });
});

describe('addresses, routes, neighbours and fdb over rtnetlink', () => {
  it('add, replace and delete, read back by iproute2', async () => {
    await apply(
      new Plan().add(
        op.addAddr({ ns: a, addr: '10.88.0.1/24', dev: 'br0' }),
        op.replaceAddr({ ns: a, addr: '10.88.0.1/24', dev: 'br0' }),
        op.addAddr({ ns: a, addr: '10.88.1.0/32', dev: 'flannel.7' }),
        op.setLink({ ns: a, dev: 'flannel.7', up: true }),
        op.addRoute({ ns: a, dst: '10.77.0.0/16', via: '198.18.5.2', dev: 'up0' }),
        op.replaceRoute({ ns: a, dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flannel.7', onlink: true }),
        op.addRoute({ ns: a, dst: '10.66.0.0/16', dev: 'br0' }),
        op.setNeigh({ ns: a, dst: '10.244.2.0', mac: '02:00:00:00:02:02', dev: 'flannel.7' }),
        op.replaceFdb({ ns: a, mac: '02:00:00:00:02:02', dev: 'flannel.7', dst: '198.18.5.2' }),
        op.setSysctl({ ns: a, key: 'net/ipv4/conf/flannel.7/accept_local', value: '1' }),
      ),
    );
    const br = (await ipj.addrs(a, 'br0'))[0]!;
    assert.deepEqual(
      br.addr_info.filter((x) => x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`),
      ['10.88.0.1/24'],
    );
    const rs = await ipj.routes(a);
    assert.ok(
      rs.some((r) => r.dst === '10.77.0.0/16' && r.gateway === '198.18.5.2' && r.dev === 'up0'),
      JSON.stringify(rs),
    );
    assert.ok(
      rs.some((r) => r.dst === '10.244.2.0/24' && r.gateway === '10.244.2.0' && r.flags?.includes('onlink')),
      JSON.stringify(rs),
    );
    assert.ok(
      rs.some((r) => r.dst === '10.66.0.0/16' && r.dev === 'br0' && r.scope === 'link'),
      JSON.stringify(rs),
    );
    const n = await ipj.neighbours(a, 'flannel.7');
    assert.ok(
      n.some((x) => x.dst === '10.244.2.0' && x.lladdr === '02:00:00:00:02:02' && x.state?.includes('PERMANENT')),
      JSON.stringify(n),
    );
    const f = await ipj.fdb(a, 'flannel.7');
    assert.ok(
      f.some((x) => x.mac === '02:00:00:00:02:02' && x.dst === '198.18.5.2' && x.state === 'permanent'),
      JSON.stringify(f),
    );
    const sysctl = await topo.exec('a', ['cat', '/proc/sys/net/ipv4/conf/flannel.7/accept_local']);
    assert.equal(sysctl.stdout.trim(), '1');

    await apply(
      new Plan().add(
        op.delRoute({ ns: a, dst: '10.77.0.0/16', via: '198.18.5.2', dev: 'up0' }),
        op.delNeigh({ ns: a, dst: '10.244.2.0', dev: 'flannel.7' }),
        op.delFdb({ ns: a, mac: '02:00:00:00:02:02', dev: 'flannel.7', dst: '198.18.5.2' }),
        op.delAddr({ ns: a, addr: '10.88.0.1/24', dev: 'br0' }),
      ),
    );
    assert.ok(!(await ipj.routes(a)).some((r) => r.dst === '10.77.0.0/16'));
    assert.ok(!(await ipj.neighbours(a, 'flannel.7')).some((x) => x.dst === '10.244.2.0'));
    assert.ok(!(await ipj.fdb(a, 'flannel.7')).some((x) => x.dst === '198.18.5.2'));
    assert.equal(await kindOf(apply(new Plan().add(op.delNeigh({ ns: a, dst: '10.244.2.0', dev: 'flannel.7' })))), 'missing');
    assert.equal(await kindOf(apply(new Plan().add(op.delFdb({ ns: a, mac: '02:00:00:00:02:02', dev: 'flannel.7', dst: '198.18.5.2' })))), 'missing');
  });
});

describe('state.ts dumps agree with iproute2', () => {
  it('links, addresses, routes, neighbours and fdb entries', async () => {
    await apply(
      new Plan().add(
        op.setNeigh({ ns: a, dst: '10.244.3.0', mac: '02:00:00:00:03:03', dev: 'flannel.7' }),
        op.replaceFdb({ ns: a, mac: '02:00:00:00:03:03', dev: 'flannel.7', dst: '198.18.5.3' }),
        op.setNeigh({ ns: a, dst: '198.18.5.9', mac: '02:00:00:00:05:09', dev: 'up0' }),
      ),
    );
    const s = await state.snapshot(a);
    const oracle = await ipj.links(a);
    assert.deepEqual(s.links.map((l) => l.name).sort(), oracle.map((l) => l.ifname).sort());
    for (const o of oracle) {
      const l = s.links.find((x) => x.name === o.ifname)!;
      assert.equal(l.index, o.ifindex);
      assert.equal(l.mtu, o.mtu);
      assert.equal(l.up, o.flags.includes('UP'), o.ifname);
      assert.equal(l.master, o.master);
      assert.equal(l.alias, o.ifalias);
      assert.equal(l.kind, o.linkinfo?.info_kind);
      if (o.address && o.address.length === 17) assert.equal(l.mac, o.address);
    }
    const vx = s.links.find((l) => l.name === 'flannel.7')!;
    assert.deepEqual(vx.vxlan, { vni: 7, port: 8472, learning: false, local: '198.18.5.1', dev: 'up0' });
    assert.equal(s.links.find((l) => l.name === 'tun9')!.tun?.pi, false);

    const oracleAddrs = (await ipj.addrs(a)).flatMap((l) =>
      l.addr_info.map((x) => ({ text: `${l.ifname} ${x.local}/${x.prefixlen}`, v4: x.family === 'inet' })),
    );
    const text = (xs: state.Addr[]) => xs.map((x) => `${x.dev} ${x.address}/${x.prefix}`).sort();
    assert.deepEqual(text(await state.addrs(a)), oracleAddrs.map((x) => x.text).sort(), 'every family');
    assert.deepEqual(
      text(s.addrs),
      oracleAddrs
        .filter((x) => x.v4)
        .map((x) => x.text)
        .sort(),
      'the snapshot: IPv4',
    );

    const norm = (d: string) => (d === 'default' || d.includes('/') ? d : `${d}/32`);
    const or = (await ipj.routes(a)).map((r) => `${norm(r.dst)} ${r.gateway ?? '-'} ${r.dev ?? '-'} ${r.flags?.includes('onlink') ?? false}`).sort();
    assert.deepEqual(s.routes.map((r) => `${r.dst} ${r.via ?? '-'} ${r.dev ?? '-'} ${r.onlink}`).sort(), or);

    const on = (await ipj.neighbours(a, 'flannel.7')).map((n) => `${n.dst} ${n.lladdr} ${n.state?.includes('PERMANENT') ?? false}`).sort();
    assert.deepEqual(
      s.neighbours
        .filter((n) => n.dev === 'flannel.7')
        .map((n) => `${n.dst} ${n.mac} ${n.permanent}`)
        .sort(),
      on,
    );

    const of = (await ipj.fdb(a, 'flannel.7'))
      .filter((f) => f.dst)
      .map((f) => `${f.mac} ${f.dst}`)
      .sort();
    assert.deepEqual(
      s.fdb
        .filter((f) => f.dev === 'flannel.7' && f.dst)
        .map((f) => `${f.mac} ${f.dst}`)
        .sort(),
      of,
    );
    assert.ok(s.neighbours.some((n) => n.dev === 'up0'));
    assert.ok(s.fdb.some((f) => f.dev !== 'flannel.7'));
    const one = await state.snapshot(a, { neighboursOf: ['flannel.7'] });
    assert.deepEqual(
      one.neighbours,
      s.neighbours.filter((n) => n.dev === 'flannel.7'),
      "the kernel's dump of one device's neighbours",
    );
    assert.deepEqual(
      one.fdb,
      s.fdb.filter((f) => f.dev === 'flannel.7'),
      "the kernel's dump of one device's fdb",
    );
    const none = await state.snapshot(a, { neighboursOf: ['nosuch0'] });
    assert.deepEqual([none.neighbours, none.fdb], [[], []]);
    assert.deepEqual(
      await state.link(a, 'v1'),
      s.links.find((l) => l.name === 'v1'),
    );
    assert.equal(await state.link(a, 'nosuch0'), undefined);
  });

  it('reading and rendering change nothing', async () => {
    const view = async () =>
      JSON.stringify([
        (await ipj.links(a)).map((l) => [l.ifname, l.flags, l.mtu, l.address, l.master]),
        (await ipj.addrs(a)).map((l) => [l.ifname, l.addr_info.map((x) => `${x.local}/${x.prefixlen}`)]),
        await ipj.routes(a),
      ]);
    const before = await view();
    const plan = new Plan().add(op.delLink({ ns: a, dev: 'br0' }), op.nft({ ns: a, tx: nftTx('ip', 'x').add({ type: 'table' }) }));
    assert.match(plan.render(), /link del dev br0/);
    await state.snapshot(a);
    await state.nftRuleset(a);
    assert.equal(await view(), before);
    assert.deepEqual(await state.nftRuleset(a), []);
  });
});

describe("a lease event's reconcile from the state the last one left (applied)", () => {
  const node = { name: 'n1', iface: 'up0', ifaceMtu: 1500, publicIP: '198.18.5.1', ifaceNets: [parseCidr('198.18.5.1/24')] };
  const backend = new VxlanBackend(node, { vni: 9, port: 8472, directRouting: false, mac: '02:00:00:00:09:01' });
  const lease = (n: number) => ({
    subnet: parseCidr(`10.244.${n}.0/24`),
    attrs: { publicIP: `198.18.5.${n}`, backendType: 'vxlan', backendData: { VNI: 9, VtepMAC: `02:00:00:00:09:${String(n).padStart(2, '0')}` } },
  });
  const desired = (remotes: number[]) =>
    backend.desired(lease(1), remotes.map(lease), { network: parseCidr('10.244.0.0/16'), ipMasq: true, forwardRules: true });
  /** What reconcile reads and compares, in a stable order. */
  const view = (x: Awaited<ReturnType<typeof readActual>>) => ({
    routes: x.routes.map((r) => `${r.dst} ${r.via ?? '-'} ${r.dev ?? '-'} ${r.onlink} ${r.protocol}`).sort(),
    neighbours: x.neighbours.map((n) => `${n.dst} ${n.dev} ${n.mac ?? '-'} ${n.permanent}`).sort(),
    fdb: x.fdb.map((f) => `${f.mac} ${f.dev} ${f.dst ?? '-'}`).sort(),
    peers: [...(x.table?.sets.get('vxlan_peers') ?? [])].sort(),
  });

  it('predicts what the kernel holds after the routes, neighbours, fdb entries and peers of leases added and removed', async () => {
    const first = desired([2, 3]);
    const start = reconcile(a, first, await readActual(a, first));
    await apply(start.plan);
    assert.equal(applied(await readActual(a, first), start.plan), undefined, 'a plan that makes the device is not followed');
    for (const [what, remotes] of [
      ['a lease added', [2, 3, 4]],
      ['a lease removed', [2, 4]],
      ['one added and one removed', [4, 5]],
    ] as const) {
      const d = desired([...remotes]);
      const before = await readActual(a, d);
      const { plan } = reconcile(a, d, before);
      assert.ok(!plan.empty, what);
      const known = applied(before, plan);
      assert.ok(known, `${what}: the plan is one applied() follows`);
      await apply(plan);
      const after = await readActual(a, d);
      assert.deepEqual(view(known), view(after), what);
      assert.ok(reconcile(a, d, known).plan.empty, `${what}: nothing left to do`);
    }
  });

  it('a resync that hands back the netlink part and finds the nftables generation unmoved reads the same kernel (sameKernel); a commit moves it', async () => {
    const d = desired([4, 5]);
    const read = await readActual(a, d);
    const { plan } = reconcile(a, d, read);
    await apply(plan);
    const settled = await readActual(a, d);
    const known = applied(settled, reconcile(a, d, settled).plan);
    assert.ok(known, 'an empty plan is followed');
    assert.ok(sameKernel(await readActual(a, d, known), known), 'nothing moved');
    assert.equal(sameKernel(await readActual(a, d), known), false, 'a fresh netlink read is a new one');
    await apply(new Plan().add(op.nft({ ns: a, tx: nftTx('ip', 'wgen').add({ type: 'table' }) })));
    try {
      assert.equal(sameKernel(await readActual(a, d, known), known), false, 'another table committed: the ruleset is read again');
    } finally {
      await apply(new Plan().add(op.nft({ ns: a, tx: nftTx('ip', 'wgen').delete({ type: 'table' }) })));
    }
  });
});

describe('netlink notifications: what tells a resync it must read the kernel', () => {
  // Changes made by iproute2, as someone other than the agent would make them.
  const ip = (...args: string[]) => execFileSync('ip', ['-n', topo.name('a'), ...args]);

  it("a change to a link, an address, a main-table route or the device's neighbours counts; other tables and devices do not", async () => {
    await apply(
      new Plan().add(
        op.addBridge({ ns: a, name: 'wdev0' }),
        op.addBridge({ ns: a, name: 'wother0' }),
        op.setLink({ ns: a, dev: 'wdev0', up: true }),
        op.setLink({ ns: a, dev: 'wother0', up: true }),
      ),
    );
    const device = (await state.links(a)).find((l) => l.name === 'wdev0')!.index;
    const concerns = concernsNetlinkPart(device);
    const watch = RtnlChanges.open(a);
    try {
      assert.equal(watch.changed(concerns), false, 'nothing happened yet');
      const cases: [string, string[], boolean][] = [
        ['a route in another table', ['route', 'add', '10.250.1.0/24', 'dev', 'wdev0', 'table', '100'], false],
        ["another device's neighbour", ['neigh', 'add', '10.250.2.1', 'lladdr', '02:00:00:00:02:01', 'dev', 'wother0', 'nud', 'permanent'], false],
        ['a main-table route', ['route', 'add', '10.250.3.0/24', 'dev', 'wdev0'], true],
        ["the device's neighbour", ['neigh', 'add', '10.250.4.1', 'lladdr', '02:00:00:00:04:01', 'dev', 'wdev0', 'nud', 'permanent'], true],
        ['a main-table route deleted', ['route', 'del', '10.250.3.0/24', 'dev', 'wdev0'], true],
        ['an address', ['addr', 'add', '10.250.5.1/32', 'dev', 'wother0'], true],
        ['a link', ['link', 'set', 'wother0', 'mtu', '1400'], true],
      ];
      for (const [what, args, counts] of cases) {
        ip(...args);
        assert.equal(watch.changed(concerns), counts, what);
        assert.equal(watch.changed(concerns), false, `${what}: read once, then drained`);
      }
    } finally {
      watch.close();
      await apply(new Plan().add(op.delLink({ ns: a, dev: 'wdev0' }), op.delLink({ ns: a, dev: 'wother0' })));
    }
  });
});

describe('nftables transactions', () => {
  it('apply a table with a verdict map of concatenated keys, and read it back', async () => {
    const tx = nftTx('ip', 'svc')
      .add({ type: 'table' })
      .add({ type: 'chain', name: 'svc-a' })
      .add({ type: 'chain', name: 'pre', chainType: 'nat', hook: 'prerouting', priority: 'dstnat', policy: 'accept' })
      .add({ type: 'map', name: 'service-ips', key: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' })
      .add({ type: 'element', set: 'service-ips', key: ['10.96.0.1', 'tcp', '443'], value: 'goto svc-a' })
      .add({ type: 'rule', chain: 'pre', rule: 'ip daddr . meta l4proto . th dport vmap @service-ips', comment: 'services' });
    await apply(new Plan().add(op.nft({ ns: a, tx })));
    const t = await state.nftTable(a, 'ip', 'svc');
    assert.equal(t?.chains.get('pre')?.hook, 'prerouting');
    assert.equal(t?.chains.get('pre')?.rules[0]?.comment, 'services');
    assert.equal(t?.sets.get('service-ips')?.length, 1);
    const text = await topo.exec('a', ['nft', 'list', 'map', 'ip', 'svc', 'service-ips']);
    assert.match(text.stdout, /10\.96\.0\.1 \. tcp \. 443 : goto svc-a/);
    assert.equal(await kindOf(apply(new Plan().add(op.nft({ ns: a, tx: nftTx('ip', 'nosuch').delete({ type: 'table' }) })))), 'missing');
    await apply(new Plan().add(op.nft({ ns: a, tx: nftTx('ip', 'nosuch').delete({ type: 'table' }), tolerate: 'missing' })));
  });

  it('element changes of an IPv4 set go over nfnetlink: add is idempotent, deleting a missing one is missing', async () => {
    await apply(new Plan().add(op.nft({ ns: a, tx: nftTx('ip', 'peers').add({ type: 'table' }, { type: 'set', name: 'p', key: 'ipv4_addr' }) })));
    const elements = nftTx('ip', 'peers').add({ type: 'element', set: 'p', key: '198.18.0.12' }, { type: 'element', set: 'p', key: '198.18.0.13' });
    assert.ok(elementsOnly(elements));
    await apply(new Plan().add(op.nft({ ns: a, tx: elements }), op.nft({ ns: a, tx: elements })));
    const listed = async () => (await topo.exec('a', ['nft', 'list', 'set', 'ip', 'peers', 'p'])).stdout;
    assert.match(await listed(), /elements = \{ 198\.18\.0\.12, 198\.18\.0\.13 \}/);
    assert.deepEqual((await state.nftTable(a, 'ip', 'peers'))?.sets.get('p')?.sort(), ['198.18.0.12', '198.18.0.13']);
    const del = nftTx('ip', 'peers').delete({ type: 'element', set: 'p', key: '198.18.0.12' });
    await apply(new Plan().add(op.nft({ ns: a, tx: del })));
    assert.doesNotMatch(await listed(), /198\.18\.0\.12/);
    assert.equal(await kindOf(apply(new Plan().add(op.nft({ ns: a, tx: del })))), 'missing');
    assert.equal(
      await kindOf(apply(new Plan().add(op.nft({ ns: a, tx: nftTx('ip', 'peers').add({ type: 'element', set: 'nosuch', key: '1.2.3.4' }) })))),
      'missing',
    );
  });

  it('a cached ruleset is dumped again only after a commit, by anyone, moved the generation', async () => {
    const read = state.cachedRuleset((t) => t === 'skipped');
    const first = await read(a);
    assert.equal(await read(a), first, 'an unchanged generation: the same tables, not a new dump');
    // A commit elsewhere (the nft tool, not this process) to a table the reader skips still moves the generation.
    await topo.exec('a', ['nft', 'add table ip skipped']);
    const second = await read(a);
    assert.notEqual(second, first);
    assert.ok(!second.some((t) => t.name === 'skipped'));
    await topo.exec('a', ['nft', 'add table ip cached-seen']);
    assert.ok((await read(a)).some((t) => t.name === 'cached-seen'));
    await topo.exec('a', ['nft', 'delete table ip skipped; delete table ip cached-seen']);
  });
});
