/**
 * The weft plugin end to end, on the direct path (the front runs Node itself) and on the served path
 * (the front forwards to `weft cni serve`): ADD, CHECK, DEL, versions, and the result's shape next to
 * the reference bridge plugin's.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deleteNetns } from '../src/kernel/netns.js';
import { CniLab, expectError, iface, ipOf, parseResult, reservations, waitFor, WEFT, type CniResult } from './cni-support.js';
import { neighbours } from './ipj.js';

let lab: CniLab;
let served: string;

before(async () => {
  lab = await CniLab.create();
  served = await lab.serve();
});
after(() => lab?.destroy());

/** The result with its values replaced by what they are, to compare two plugins' result shapes. */
function shape(v: unknown, bridge: string, sandbox: string): unknown {
  if (Array.isArray(v)) return v.map((x) => shape(x, bridge, sandbox));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x, bridge, sandbox)]));
  if (typeof v !== 'string') return v;
  if (v === bridge) return '<bridge>';
  if (v === sandbox) return '<sandbox>';
  if (/^veth[0-9a-f]{8}$/.test(v)) return '<veth>';
  if (/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(v)) return '<mac>';
  if (/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(v)) return '<cidr>';
  if (/^\d+\.\d+\.\d+\.\d+$/.test(v)) return '<ip>';
  return v;
}

const linkOf = async (name: string) => (await lab.hostLinks()).find((l) => l.ifname === name);

describe('result shape next to the reference bridge', () => {
  it('matches bridge + host-local: interfaces [bridge, veth, container], ips[].interface 2, gateway .1', async () => {
    const ref = await lab.pod('shape-ref');
    const ours = await lab.pod('shape-weft');
    const common = { cniVersion: '1.0.0', isGateway: true, isDefaultGateway: true };
    const ipam = (subnet: string) => ({ type: 'host-local', dataDir: lab.dataDir, ranges: [[{ subnet }]], routes: [{ dst: '10.96.0.0/12' }] });
    const r = parseResult(
      await lab.ok(
        'bridge',
        { command: 'ADD', containerId: 'shape-ref', netns: ref.path, ifname: 'eth0' },
        { ...common, name: 'shape-ref', type: 'bridge', bridge: 'brshape-ref', ipam: ipam('10.39.1.0/24') },
      ),
    );
    const w = parseResult(
      await lab.ok(
        'weft',
        { command: 'ADD', containerId: 'shape-weft', netns: ours.path, ifname: 'eth0' },
        { ...common, name: 'shape-weft', type: 'weft', bridge: 'brshape-weft', socket: served, ipam: ipam('10.39.2.0/24') },
      ),
    );
    // The one difference: weft's result names the cluster DNS (the reference bridge's dns is empty).
    assert.deepEqual(shape({ ...w, dns: r.dns }, 'brshape-weft', ours.path), shape(r, 'brshape-ref', ref.path));
    assert.deepEqual(w.dns, { nameservers: ['10.96.0.10'], search: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], options: ['ndots:5'] });
    assert.deepEqual(w.ips, [{ address: '10.39.2.2/24', gateway: '10.39.2.1', interface: 2 }]);
    assert.deepEqual(w.routes, [{ dst: '10.96.0.0/12' }, { dst: '0.0.0.0/0', gw: '10.39.2.1' }]);
  });
});

describe('the front and a dead server', () => {
  it('falls back to direct when the server hangs up before taking the request', async () => {
    // A unix socket that accepts and closes at once (a filesystem object, no network change).
    const socket = join(lab.dir, 'rude.sock');
    const rude = createServer((c) => c.destroy());
    await new Promise<void>((resolve) => rude.listen(socket, resolve));
    try {
      const pod = await lab.pod('rude');
      const conf = {
        cniVersion: '1.0.0',
        name: 'rude',
        type: 'weft',
        bridge: 'brrude',
        socket,
        padding: 'x'.repeat(1 << 20),
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.38.2.0/24' }]] },
      };
      const r = await lab.plugin('weft', { command: 'ADD', containerId: 'rude-1', netns: pod.path, ifname: 'eth0' }, conf);
      assert.equal(r.code, 0, `exit ${r.code}, stdout ${r.stdout.slice(0, 300)}`);
      assert.equal(parseResult(r.json).ips[0]?.address, '10.38.2.2/24');
      await lab.ok('weft', { command: 'DEL', containerId: 'rude-1', netns: pod.path, ifname: 'eth0' }, { ...conf, prevResult: r.json });
    } finally {
      rude.close();
    }
  });

  it('falls back to direct on a stale socket, and a new server takes the path over', async () => {
    const socket = join(lab.dir, 'dies.sock');
    const child = lab.topo.spawn('host', [process.execPath, WEFT, 'cni', 'serve', '--socket', socket]);
    let log = '';
    child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    await waitFor('the second server', () => log.includes('listening on'), 30_000);
    child.kill('SIGKILL');
    await waitFor('the second server to die', () => child.exitCode !== null || child.signalCode !== null);
    assert.ok(existsSync(socket), 'a killed server leaves its socket file');

    const pod = await lab.pod('stale');
    const conf = {
      cniVersion: '1.0.0',
      name: 'stale',
      type: 'weft',
      bridge: 'brstale',
      socket,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.38.1.0/24' }]] },
    };
    const r = parseResult(await lab.ok('weft', { command: 'ADD', containerId: 'stale-1', netns: pod.path, ifname: 'eth0' }, conf));
    assert.equal(r.ips[0]?.address, '10.38.1.2/24');
    assert.ok(!log.includes('stale-1'), 'the dead server handled nothing');

    const again = lab.topo.spawn('host', [process.execPath, WEFT, 'cni', 'serve', '--socket', socket]);
    let log2 = '';
    again.stdout!.on('data', (d: Buffer) => (log2 += d.toString()));
    again.stderr!.on('data', (d: Buffer) => (log2 += d.toString()));
    await waitFor('a new server on the stale path', () => log2.includes('listening on'), 15_000);
    await lab.ok('weft', { command: 'DEL', containerId: 'stale-1', netns: pod.path, ifname: 'eth0' }, { ...conf, prevResult: r });
    await waitFor('the server to log the DEL', () => log2.includes('stale-1'));
    assert.equal(reservations(join(lab.dataDir, 'stale')).size, 0);
    // A second server on a live socket refuses to start.
    const third = await lab.topo.exec('host', [process.execPath, WEFT, 'cni', 'serve', '--socket', socket], { timeoutMs: 15_000 });
    assert.notEqual(third.code, 0);
    assert.match(third.stderr, /already listens/);
    again.kill('SIGTERM');
  });
});

for (const mode of ['direct', 'served'] as const) {
  describe(`weft plugin, ${mode} path`, () => {
    const third = mode === 'direct' ? 1 : 2;
    const subnet = `10.30.${third}.0/24`;
    const bridge = `br-${mode}`;
    const NET = `paths-${mode}`;
    const netDir = () => join(lab.dataDir, NET);
    const conf = (o: Record<string, unknown> = {}) => ({
      cniVersion: '1.0.0',
      name: NET,
      type: 'weft',
      socket: mode === 'served' ? served : join(lab.dir, 'nothing-listens.sock'),
      bridge,
      isGateway: true,
      isDefaultGateway: true,
      ipMasq: true,
      mtu: 1400,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet }]], routes: [{ dst: '10.30.0.0/16' }] },
      ...o,
    });
    const call = (command: string, id: string, netns: string) => ({ command, containerId: id, netns, ifname: 'eth0' });
    /** The server handled a request for `id` (served), or nothing reached it (direct). */
    const handledBy = (id: string) => assert.equal(lab.serverLog.includes(` ${id} `), mode === 'served', `server log: ${lab.serverLog}`);

    it('ADD wires the pod, CHECK passes, CHECK fails without the route, DEL undoes it all, twice', async () => {
      const pod = await lab.pod(`main-${mode}`);
      const id = `main-${mode}`;
      const result = parseResult(await lab.ok('weft', call('ADD', id, pod.path), conf()));
      handledBy(id);

      assert.equal(result.cniVersion, '1.0.0');
      assert.equal(result.interfaces?.length, 3);
      const [br, veth, cont] = [iface(result, 0), iface(result, 1), iface(result, 2)];
      assert.equal(br.name, bridge);
      assert.equal(br.mac, (await linkOf(bridge))?.address, 'interfaces[0] is the bridge, with its MAC');
      assert.equal(br.sandbox, undefined);
      assert.match(veth.name, /^veth[0-9a-f]{8}$/);
      const hostVeth = await linkOf(veth.name);
      assert.ok(hostVeth, 'the host veth exists');
      assert.equal(hostVeth.master, bridge);
      assert.equal(hostVeth.address, veth.mac);
      assert.equal(hostVeth.mtu, 1400);
      assert.ok(hostVeth.flags.includes('UP'));
      assert.equal(cont.name, 'eth0');
      assert.equal(cont.sandbox, pod.path);
      assert.deepEqual(result.ips, [{ address: `10.30.${third}.2/24`, gateway: `10.30.${third}.1`, interface: 2 }]);
      assert.deepEqual(result.routes, [{ dst: '10.30.0.0/16' }, { dst: '0.0.0.0/0', gw: `10.30.${third}.1` }]);
      assert.deepEqual(result.dns, {
        nameservers: ['10.96.0.10'],
        search: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'],
        options: ['ndots:5'],
      });

      // What the result says is really there.
      const [eth0] = await lab.podAddrs(pod.path, 'eth0');
      assert.ok(eth0, 'eth0 is in the pod');
      assert.equal(eth0.address, cont.mac);
      assert.ok(eth0.flags.includes('UP'));
      assert.deepEqual(
        eth0.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
        [`10.30.${third}.2/24`],
      );
      const podRoutes = await lab.podRoutes(pod.path);
      assert.ok(
        podRoutes.some((r) => r.dst === '10.30.0.0/16' && r.gateway === `10.30.${third}.1` && r.dev === 'eth0'),
        JSON.stringify(podRoutes),
      );
      assert.ok(
        podRoutes.some((r) => r.dst === 'default' && r.gateway === `10.30.${third}.1` && r.dev === 'eth0'),
        JSON.stringify(podRoutes),
      );
      const brAddrs = (await lab.podAddrs(lab.hostPath, bridge))[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`);
      assert.ok(brAddrs.includes(`10.30.${third}.1/24`), 'isGateway put the gateway on the bridge');
      assert.equal(reservations(netDir()).get(`10.30.${third}.2`), `${id}\r\neth0`);
      assert.deepEqual(await lab.masqAddrs(), [`10.30.${third}.2`], 'ipMasq added the pod to the masquerade set');
      const fwd = await lab.topo.exec('host', ['cat', '/proc/sys/net/ipv4/ip_forward']);
      assert.equal(fwd.stdout.trim(), '1', 'isGateway turned forwarding on in the host');

      await lab.ok('weft', call('CHECK', id, pod.path), conf({ prevResult: result }));

      const del = await lab.topo.exec(pod.name, ['ip', 'route', 'del', '10.30.0.0/16']);
      assert.equal(del.code, 0, del.stderr);
      await lab.fails('weft', call('CHECK', id, pod.path), conf({ prevResult: result }), 7, /10\.30\.0\.0\/16/);

      await lab.ok('weft', call('DEL', id, pod.path), conf({ prevResult: result }));
      assert.equal(await linkOf(veth.name), undefined, 'DEL removed the host veth');
      assert.deepEqual(await lab.podAddrs(pod.path).then((ls) => ls.map((l) => l.ifname)), ['lo'], 'and with it the pod end');
      assert.equal(reservations(netDir()).size, 0, 'DEL released the address');
      assert.deepEqual(await lab.masqAddrs(), [], 'DEL removed the masquerade element');
      assert.ok(await linkOf(bridge), 'the bridge stays, as with the reference plugin');

      await lab.ok('weft', call('DEL', id, pod.path), conf({ prevResult: result }));
      await lab.ok('weft', call('DEL', id, pod.path), conf());
      await lab.fails('weft', call('CHECK', id, pod.path), conf({ prevResult: result }), 7);
    });

    it('staticNeighbours: pod and bridge hold permanent entries for each other, two pods talk through the node without ARP, CHECK and DEL know the entries', async () => {
      const br = `bs-${mode}`;
      const gw = `10.31.${third}.1`;
      const sconf = (o: Record<string, unknown> = {}) =>
        conf({
          name: `static-${mode}`,
          bridge: br,
          ipMasq: false,
          staticNeighbours: true,
          ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: `10.31.${third}.0/24` }]] },
          ...o,
        });
      const a = await lab.pod(`sa-${mode}`);
      const b = await lab.pod(`sb-${mode}`);
      const ra = parseResult(await lab.ok('weft', call('ADD', `sa-${mode}`, a.path), sconf()));
      const rb = parseResult(await lab.ok('weft', call('ADD', `sb-${mode}`, b.path), sconf()));
      const brMac = (await linkOf(br))?.address;
      const show = (ns: { dst: string; lladdr?: string; state?: string[] }[]) =>
        ns.map((n) => `${n.dst} ${n.lladdr ?? '-'} ${n.state?.join(',') ?? ''}`).sort();
      const pinned = (r: typeof ra) => `${ipOf(r)} ${iface(r, 2).mac} PERMANENT`;
      assert.deepEqual(show(await neighbours(lab.hostPath, br)), [pinned(ra), pinned(rb)].sort(), 'the bridge knows each pod');
      for (const p of [a, b]) assert.deepEqual(show(await neighbours(p.path, 'eth0')), [`${gw} ${brMac} PERMANENT`], 'each pod knows its gateway');
      assert.ok(
        (await lab.podRoutes(a.path)).some((r) => r.dst === `10.31.${third}.0/24` && r.gateway === gw),
        'the pod subnet goes via the gateway, not on-link',
      );

      // a → b: through the node (routed on the bridge), so neither pod ARPs for the other.
      const ping = await lab.topo.exec(a.name, ['ping', '-n', '-c', '2', '-W', '2', ipOf(rb)]);
      assert.equal(ping.code, 0, ping.stdout + ping.stderr);
      for (const p of [a, b]) assert.deepEqual(show(await neighbours(p.path, 'eth0')), [`${gw} ${brMac} PERMANENT`], 'no dynamic entry in the pods');
      assert.deepEqual(show(await neighbours(lab.hostPath, br)), [pinned(ra), pinned(rb)].sort(), 'none on the bridge either');

      await lab.ok('weft', call('CHECK', `sa-${mode}`, a.path), sconf({ prevResult: ra }));
      const gone = await lab.topo.exec('host', ['ip', 'neigh', 'del', ipOf(ra), 'dev', br]);
      assert.equal(gone.code, 0, gone.stderr);
      await lab.fails('weft', call('CHECK', `sa-${mode}`, a.path), sconf({ prevResult: ra }), 7, /no permanent neighbour/);

      await lab.ok('weft', call('DEL', `sb-${mode}`, b.path), sconf({ prevResult: rb }));
      assert.deepEqual(show(await neighbours(lab.hostPath, br)), [], "DEL removed the bridge's entry for the pod");
      await lab.ok('weft', call('DEL', `sa-${mode}`, a.path), sconf());
    });

    it('DEL with a missing netns and no prevResult still releases the IP', async () => {
      const pod = await lab.pod(`gone-${mode}`);
      const id = `gone-${mode}`;
      const result = parseResult(await lab.ok('weft', call('ADD', id, pod.path), conf()));
      const ip = ipOf(result);
      assert.equal(reservations(netDir()).get(ip), `${id}\r\neth0`);
      await deleteNetns(lab.topo.name(pod.name));
      await lab.ok('weft', call('DEL', id, pod.path), conf());
      handledBy(id);
      assert.equal(reservations(netDir()).get(ip), undefined, 'the address is free again');
      assert.equal(await linkOf(iface(result, 1).name), undefined);
      assert.ok(!(await lab.masqAddrs()).includes(ip), 'DEL removed the masquerade element');
      // Without CNI_NETNS at all, as a runtime may send it.
      const pod2 = await lab.pod(`gone2-${mode}`);
      const r2 = parseResult(await lab.ok('weft', call('ADD', `${id}-2`, pod2.path), conf()));
      await lab.ok('weft', { command: 'DEL', containerId: `${id}-2`, ifname: 'eth0' }, conf({ prevResult: r2 }));
      assert.equal(reservations(netDir()).size, 0);
      assert.equal(await linkOf(iface(r2, 1).name), undefined);
    });

    it('answers in the requested version: 0.3.1 has ips[].version, 0.4.0 CHECK works, 1.1.0 has the mtu', async () => {
      const pod = await lab.pod(`v-${mode}`);
      const id = `v031-${mode}`;
      const r031 = parseResult(await lab.ok('weft', call('ADD', id, pod.path), conf({ cniVersion: '0.3.1' })));
      assert.equal(r031.cniVersion, '0.3.1');
      assert.equal(r031.ips.length, 1);
      assert.equal(r031.ips[0]?.version, '4');
      assert.equal(r031.ips[0]?.interface, 2);
      assert.equal(iface(r031, 2).mtu, undefined, 'interface mtu is 1.1.0');
      await lab.fails('weft', call('CHECK', id, pod.path), conf({ cniVersion: '0.3.1', prevResult: r031 }), 1);
      await lab.ok('weft', call('DEL', id, pod.path), conf({ cniVersion: '0.3.1', prevResult: r031 }));
      assert.equal(reservations(netDir()).size, 0);

      const r040 = parseResult(await lab.ok('weft', call('ADD', `v040-${mode}`, pod.path), conf({ cniVersion: '0.4.0' })));
      assert.equal(r040.cniVersion, '0.4.0');
      assert.equal(r040.ips[0]?.version, '4');
      await lab.ok('weft', call('CHECK', `v040-${mode}`, pod.path), conf({ cniVersion: '0.4.0', prevResult: r040 }));
      const remove = await lab.topo.exec(pod.name, ['ip', 'addr', 'flush', 'dev', 'eth0']);
      assert.equal(remove.code, 0);
      await lab.fails('weft', call('CHECK', `v040-${mode}`, pod.path), conf({ cniVersion: '0.4.0', prevResult: r040 }), 7, /address/);
      await lab.ok('weft', call('DEL', `v040-${mode}`, pod.path), conf({ cniVersion: '0.4.0', prevResult: r040 }));

      const r110 = parseResult(await lab.ok('weft', call('ADD', `v110-${mode}`, pod.path), conf({ cniVersion: '1.1.0' })));
      assert.equal(r110.cniVersion, '1.1.0');
      assert.ok(r110.ips[0]);
      assert.equal(r110.ips[0].version, undefined);
      assert.equal(iface(r110, 2).mtu, 1400);
      await lab.ok('weft', call('CHECK', `v110-${mode}`, pod.path), conf({ cniVersion: '1.1.0', prevResult: r110 }));
      await lab.ok('weft', call('DEL', `v110-${mode}`, pod.path), conf({ cniVersion: '1.1.0', prevResult: r110 }));
      assert.equal(reservations(netDir()).size, 0);
      assert.deepEqual(
        (await lab.hostVeths()).filter((l) => l.master === bridge),
        [],
        'no veth is left on the bridge',
      );
    });

    it('hairpinMode turns hairpin on for the host veth; bridge and veths get the mtu', async () => {
      const pod = await lab.pod(`hp-${mode}`);
      const c = conf({
        name: `hp-${mode}`,
        bridge: `brhp-${mode}`,
        hairpinMode: true,
        ipMasq: false,
        isDefaultGateway: false,
        mtu: 1300,
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: `10.37.${third}.0/24` }]] },
      });
      const r = parseResult(await lab.ok('weft', call('ADD', `hp-${mode}`, pod.path), c));
      const veth = (await lab.hostLinks()).find((l) => l.ifname === iface(r, 1).name);
      assert.equal(veth?.linkinfo?.info_slave_data?.hairpin, true, JSON.stringify(veth?.linkinfo));
      assert.equal((await linkOf(`brhp-${mode}`))?.mtu, 1300);
      assert.equal((await lab.podAddrs(pod.path, 'eth0'))[0] && (await lab.topo.exec(pod.name, ['cat', '/sys/class/net/eth0/mtu'])).stdout.trim(), '1300');
      await lab.ok('weft', call('CHECK', `hp-${mode}`, pod.path), { ...c, prevResult: r });
      await lab.ok('weft', call('DEL', `hp-${mode}`, pod.path), { ...c, prevResult: r });
      assert.equal(reservations(join(lab.dataDir, `hp-${mode}`)).size, 0);
    });

    it('VERSION lists every supported version', async () => {
      const r = await lab.plugin(
        'weft',
        { command: 'VERSION' },
        { cniVersion: '1.1.0', socket: mode === 'served' ? served : join(lab.dir, 'nothing-listens.sock') },
      );
      assert.equal(r.code, 0, r.stdout);
      assert.deepEqual(r.json, { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
      const e = await lab.plugin(
        'weft',
        { command: 'ADD', containerId: 'x', netns: lab.hostPath, ifname: 'eth0' },
        conf({ cniVersion: '0.4.0', ipam: { type: 'none-here' } }),
      );
      assert.equal(expectError(e, 7, /none-here/, 'ADD').cniVersion, '0.4.0', 'an error answers in the config version');
    });
  });
}

describe('masquerade rules', () => {
  it('ADD and DEL change set elements only: the chain keeps its rules (same handles); a flushed chain is written again', async () => {
    const conf = {
      cniVersion: '1.0.0',
      name: 'masqonce',
      type: 'weft',
      bridge: 'brmasq',
      isGateway: true,
      ipMasq: true,
      socket: join(lab.dir, 'nothing-listens.sock'),
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.38.3.0/24' }]] },
    };
    const call = (command: string, id: string, netns: string) => ({ command, containerId: id, netns, ifname: 'eth0' });
    const a = await lab.pod('masq-a');
    const b = await lab.pod('masq-b');
    const ra = parseResult(await lab.ok('weft', call('ADD', 'masq-a', a.path), conf));
    const handles = await lab.masqRuleHandles();
    assert.equal(handles.length, 2, 'the chain has its two rules');
    const rb = parseResult(await lab.ok('weft', call('ADD', 'masq-b', b.path), conf));
    assert.deepEqual(await lab.masqRuleHandles(), handles, 'a second ADD left the rules alone');
    await lab.ok('weft', call('DEL', 'masq-a', a.path), { ...conf, prevResult: ra });
    assert.deepEqual(await lab.masqRuleHandles(), handles, 'DEL left the rules alone');
    // Other tests' pods may be in the set too: only this network's count here.
    const ours = async () => (await lab.masqAddrs()).filter((a) => a.startsWith('10.38.3.'));
    assert.deepEqual(await ours(), [ipOf(rb)]);

    const flush = await lab.topo.exec('host', ['nft', 'flush', 'chain', 'ip', 'weft-cni', 'postrouting']);
    assert.equal(flush.code, 0, flush.stderr);
    const c = await lab.pod('masq-c');
    const rc = parseResult(await lab.ok('weft', call('ADD', 'masq-c', c.path), conf));
    assert.equal((await lab.masqRuleHandles()).length, 2, 'an ADD wrote the lost rules again, once');
    assert.match(await lab.nftRuleset(), /ip saddr @masq_src ip daddr != 224\.0\.0\.0\/4 masquerade/);
    assert.deepEqual(await ours(), [ipOf(rb), ipOf(rc)].sort());
  });
});

describe('staticNeighbours: GC, and a bridge someone else made', () => {
  const call = (command: string, id: string, netns: string) => ({ command, containerId: id, netns, ifname: 'eth0' });
  const sconf = (name: string, bridge: string, subnet: string) => ({
    cniVersion: '1.1.0',
    name,
    type: 'weft',
    socket: join(lab.dir, 'nothing-listens.sock'),
    bridge,
    isGateway: true,
    staticNeighbours: true,
    ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet }]] },
  });
  const onBridge = async (br: string) => (await neighbours(lab.hostPath, br)).map((n) => `${n.dst} ${n.lladdr ?? '-'}`).sort();
  const host = async (...argv: string[]) => {
    const r = await lab.topo.exec('host', argv);
    assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
  };

  it("GC removes the bridge's entries for addresses of the network's ranges that no attachment holds, and no others", async () => {
    const conf = sconf('staticgc', 'brsgc', '10.36.1.0/24');
    const pods = [await lab.pod('sgc0'), await lab.pod('sgc1'), await lab.pod('sgc2')];
    const results: CniResult[] = [];
    for (const [i, p] of pods.entries()) results.push(parseResult(await lab.ok('weft', call('ADD', `sgc-${i}`, p.path), conf)));
    const entry = (r: CniResult) => `${ipOf(r)} ${iface(r, 2).mac}`;
    // sgc-2 goes without a DEL (its namespace, and with it its veth pair, is gone); an entry in the
    // range that no reservation backs (a GC or DEL that died half-way) and one outside it.
    await deleteNetns(lab.topo.name(pods[2]!.name));
    await host('ip', 'neigh', 'replace', '10.36.1.200', 'lladdr', '02:00:00:00:00:c8', 'dev', 'brsgc', 'nud', 'permanent');
    await host('ip', 'neigh', 'replace', '10.36.9.9', 'lladdr', '02:00:00:00:00:09', 'dev', 'brsgc', 'nud', 'permanent');
    assert.deepEqual(await onBridge('brsgc'), [...results.map(entry), '10.36.1.200 02:00:00:00:00:c8', '10.36.9.9 02:00:00:00:00:09'].sort());

    await lab.ok('weft', { command: 'GC' }, { ...conf, 'cni.dev/valid-attachments': [0, 1].map((i) => ({ containerID: `sgc-${i}`, ifname: 'eth0' })) });
    assert.deepEqual(await onBridge('brsgc'), [entry(results[0]!), entry(results[1]!), '10.36.9.9 02:00:00:00:00:09'].sort());
    assert.equal(reservations(join(lab.dataDir, 'staticgc')).size, 2);
    for (const i of [0, 1]) await lab.ok('weft', call('CHECK', `sgc-${i}`, pods[i]!.path), { ...conf, prevResult: results[i] });

    await lab.ok('weft', { command: 'GC' }, { ...conf, 'cni.dev/valid-attachments': [] });
    assert.deepEqual(await onBridge('brsgc'), ['10.36.9.9 02:00:00:00:00:09']);
  });

  it("fixes the MAC of a bridge made without one, so the pods' entries for their gateway stay true as ports come and go", async () => {
    const br = 'brsforeign';
    // Made as `ip link add ... type bridge` makes it: its MAC follows the lowest MAC of its ports.
    await host('ip', 'link', 'add', br, 'type', 'bridge');
    await host('ip', 'link', 'set', br, 'up');
    const conf = sconf('staticforeign', br, '10.36.2.0/24');
    const macOf = async () => (await linkOf(br))?.address;
    const a = await lab.pod('sfa');
    const b = await lab.pod('sfb');
    const ra = parseResult(await lab.ok('weft', call('ADD', 'sfa', a.path), conf));
    const mac = await macOf();
    const rb = parseResult(await lab.ok('weft', call('ADD', 'sfb', b.path), conf));
    const gateway = async (p: { path: string }) => (await neighbours(p.path, 'eth0')).map((n) => `${n.dst} ${n.lladdr ?? '-'}`);
    for (const p of [a, b]) assert.deepEqual(await gateway(p), [`10.36.2.1 ${mac}`], "each pod's gateway entry names the bridge's MAC");

    // The first pod's veth (whose MAC the bridge took when it joined) goes.
    await lab.ok('weft', call('DEL', 'sfa', a.path), { ...conf, prevResult: ra });
    assert.equal(await macOf(), mac, "the bridge kept its MAC through the ports' changes");
    await lab.ok('weft', call('CHECK', 'sfb', b.path), { ...conf, prevResult: rb });
    const ping = await lab.topo.exec(b.name, ['ping', '-n', '-c', '1', '-W', '2', '10.36.2.1']);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    await lab.ok('weft', call('DEL', 'sfb', b.path), { ...conf, prevResult: rb });
  });
});
