/**
 * Underlay mode: the weft plugin with "mode": "macvlan" puts pods of two nodes straight on the
 * emulated physical L2, with no bridge, veth, tunnel or route on the nodes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { addAddr, addBridge, addVeth, setLink } from '../src/kernel/ops.js';
import { apply, Plan } from '../src/kernel/plan.js';
import { links } from './ipj.js';
import { CniLab, expectError, parseResult } from './cni-support.js';

let lab: CniLab;

before(async () => {
  lab = await CniLab.create();
});
after(() => lab?.destroy());

describe('macvlan underlay mode', () => {
  it('pods on two nodes reach each other on the L2 itself; DEL removes the device and the address', async () => {
    // A second "node" beside the lab's host namespace, both on one switch namespace.
    const sw = await lab.topo.netns('sw');
    const node2 = await lab.topo.netns('node2');
    const host = lab.topo.path('host');
    const plan = new Plan().add(addBridge({ ns: sw, name: 'br0' }), setLink({ ns: sw, dev: 'br0', up: true }));
    for (const [port, ns, ip] of [
      ['u1', host, '192.0.2.11/24'],
      ['u2', node2, '192.0.2.12/24'],
    ] as const) {
      plan.add(addVeth({ ns: sw, name: port, peer: { name: 'eth0', netns: ns } }), setLink({ ns: sw, dev: port, master: 'br0', up: true }));
      plan.add(addAddr({ ns, addr: ip, dev: 'eth0' }), setLink({ ns, dev: 'eth0', up: true }));
    }
    await apply(plan);
    const conf = (range: [string, string]) => ({
      cniVersion: '1.1.0',
      name: 'under',
      type: 'weft',
      mode: 'macvlan',
      master: 'eth0',
      socket: join(lab.dir, 'none.sock'),
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '192.0.2.0/24', rangeStart: range[0], rangeEnd: range[1] }]] },
    });
    const p1 = await lab.pod('m1');
    const r1 = parseResult(await lab.ok('weft', { command: 'ADD', containerId: 'm1', netns: p1.path, ifname: 'eth0' }, conf(['192.0.2.100', '192.0.2.119'])));
    assert.equal(r1.interfaces?.length, 1, 'one interface, in the pod: no host device');
    assert.equal(r1.ips[0]?.address, '192.0.2.100/24');
    assert.equal(r1.ips[0]?.interface, 0);
    const p2 = await lab.pod('m2');
    // The second pod is wired from node2, as its runtime would do it there.
    const run2 = await lab.topo.exec('node2', [join(lab.binDir, 'weft')], {
      input: JSON.stringify(conf(['192.0.2.120', '192.0.2.139'])),
      env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'm2', CNI_NETNS: p2.path, CNI_IFNAME: 'eth0', CNI_PATH: lab.binDir },
    });
    assert.equal(run2.code, 0, run2.stdout);
    assert.equal((await links(host)).filter((l) => l.linkinfo?.info_kind === 'veth' && l.ifname !== 'eth0').length, 0, 'no veth on the node');
    const ping = await lab.topo.exec(undefined, ['ip', 'netns', 'exec', lab.topo.name('m1'), 'ping', '-c', '1', '-W', '2', '192.0.2.120']);
    assert.equal(ping.code, 0, `pod to pod across nodes on the L2: ${ping.stdout}${ping.stderr}`);
    const nodePing = await lab.topo.exec('node2', ['ping', '-c', '1', '-W', '2', '192.0.2.100']);
    assert.equal(nodePing.code, 0, 'another node reaches the pod directly');

    const again = await lab.plugin('weft', { command: 'ADD', containerId: 'm1b', netns: p1.path, ifname: 'eth0' }, conf(['192.0.2.100', '192.0.2.119']));
    expectError(again, 100, undefined, 'ADD on an existing ifname');
    assert.ok(
      (await lab.podAddrs(p1.path, 'eth0'))[0]!.addr_info.some((a) => a.local === '192.0.2.100'),
      'the existing interface is untouched',
    );

    await lab.ok('weft', { command: 'DEL', containerId: 'm1', netns: p1.path, ifname: 'eth0' }, conf(['192.0.2.100', '192.0.2.119']));
    assert.equal((await lab.podAddrs(p1.path)).filter((l) => l.ifname === 'eth0').length, 0, 'DEL removed the macvlan device');
    await lab.ok('weft', { command: 'DEL', containerId: 'm1', netns: p1.path, ifname: 'eth0' }, conf(['192.0.2.100', '192.0.2.119']));
  });

  it('explains a missing master and refuses options that need a host path', async () => {
    const p = await lab.pod('m3');
    const base = {
      cniVersion: '1.1.0',
      name: 'under2',
      type: 'weft',
      mode: 'macvlan',
      socket: join(lab.dir, 'none.sock'),
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '192.0.2.0/24' }]] },
    };
    const call = { command: 'ADD', containerId: 'm3', netns: p.path, ifname: 'eth0' };
    await lab.fails('weft', call, base, 7, /needs "master"/);
    await lab.fails('weft', call, { ...base, master: 'nope0' }, 7, /does not exist/);
    await lab.fails('weft', call, { ...base, master: 'lo', ipMasq: true }, 7, /do not apply to macvlan/);
  });
});
