/**
 * IPAM from the node's subnet.env (no ipam section, as flannel's CNI plugin does it), weft-ipam inline
 * in the weft config, and weft-ipam as the IPAM plugin of the reference bridge. STATUS follows the file.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CniLab, iface, ipOf, parseResult, reservations } from './cni-support.js';

let lab: CniLab;
let served: string;
let subnetFile: string;

const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

before(async () => {
  lab = await CniLab.create();
  served = await lab.serve();
  subnetFile = join(lab.dir, 'subnet.env');
  writeFileSync(subnetFile, SUBNET_ENV);
});
after(() => lab?.destroy());

const linkOf = async (name: string) => (await lab.hostLinks()).find((l) => l.ifname === name);

for (const mode of ['direct', 'served'] as const) {
  describe(`subnet.env mode, ${mode} path`, () => {
    const NET = `flannel-${mode}`;
    const socket = () => (mode === 'served' ? served : join(lab.dir, 'nothing-listens.sock'));
    const conf = (o: Record<string, unknown> = {}) => ({
      cniVersion: '1.1.0',
      name: NET,
      type: 'weft',
      subnetFile,
      dataDir: lab.dataDir,
      socket: socket(),
      ...o,
    });
    const call = (command: string, id: string, netns?: string) => ({ command, containerId: id, ...(netns ? { netns } : {}), ifname: 'eth0' });

    it('gives the pod an address of the node subnet, its MTU and a route to the whole network', async () => {
      const pod = await lab.pod(`fl-${mode}`);
      const id = `fl-${mode}`;
      const r = parseResult(await lab.ok('weft', call('ADD', id, pod.path), conf()));
      const ip = r.ips[0]!.address;
      assert.match(ip, /^10\.244\.7\.\d+\/24$/);
      assert.equal(r.ips[0]?.gateway, '10.244.7.1');
      assert.ok(!ip.startsWith('10.244.7.1/'), 'the gateway is not handed out');
      assert.deepEqual(r.routes, [{ dst: '10.244.0.0/16' }]);
      assert.equal(iface(r, 0).name, 'cni0', 'the default bridge is cni0');
      assert.equal(iface(r, 2).mtu, 1450);

      const [eth0] = await lab.podAddrs(pod.path, 'eth0');
      assert.equal(eth0?.addr_info.find((a) => a.family === 'inet')?.local, ip.split('/')[0]);
      const podLink = (await lab.topo.exec(pod.name, ['cat', '/sys/class/net/eth0/mtu'])).stdout.trim();
      assert.equal(podLink, '1450', 'FLANNEL_MTU is the pod MTU');
      assert.equal((await linkOf(iface(r, 1).name))?.mtu, 1450);
      const routes = await lab.podRoutes(pod.path);
      assert.ok(
        routes.some((x) => x.dst === '10.244.0.0/16' && x.gateway === '10.244.7.1'),
        JSON.stringify(routes),
      );
      const brAddrs = (await lab.podAddrs(lab.hostPath, 'cni0'))[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`);
      assert.ok(brAddrs.includes('10.244.7.1/24'), 'isGateway is on, as with flannel');
      assert.ok(!(await lab.nftRuleset()).includes(ip.split('/')[0]!), 'FLANNEL_IPMASQ=true: the agent masquerades, the plugin does not');
      if (mode === 'direct') assert.equal(await lab.nftRuleset(), '', 'not even a table');
      assert.equal(reservations(join(lab.dataDir, NET)).get(ip.split('/')[0]!), `${id}\r\neth0`);

      await lab.ok('weft', call('CHECK', id, pod.path), conf({ prevResult: r }));
      await lab.ok('weft', { command: 'STATUS' }, conf());

      // The subnet file goes away (the agent stopped): STATUS says so, DEL still cleans up.
      rmSync(subnetFile);
      try {
        const status = await lab.fails('weft', { command: 'STATUS' }, conf(), 50, /subnet/);
        assert.ok(status.msg.includes(subnetFile));
        await lab.fails('weft', call('ADD', `${id}-b`, pod.path), conf(), 50);
        await lab.ok('weft', call('DEL', id, pod.path), conf({ prevResult: r }));
        assert.equal(reservations(join(lab.dataDir, NET)).size, 0);
        assert.equal(await linkOf(iface(r, 1).name), undefined);
      } finally {
        writeFileSync(subnetFile, SUBNET_ENV);
      }
      await lab.ok('weft', { command: 'STATUS' }, conf());
    });

    it('masquerades when FLANNEL_IPMASQ=false, and DEL takes it back', async () => {
      const file = join(lab.dir, `nomasq-${mode}.env`);
      writeFileSync(file, SUBNET_ENV.replace('10.244.7.1/24', mode === 'direct' ? '10.244.8.1/24' : '10.244.9.1/24').replace('IPMASQ=true', 'IPMASQ=false'));
      const pod = await lab.pod(`masq-${mode}`);
      const c = conf({ name: `masq-${mode}`, subnetFile: file, bridge: `brm-${mode}` });
      const r = parseResult(await lab.ok('weft', call('ADD', `masq-${mode}`, pod.path), c));
      const ip = ipOf(r);
      const rules = await lab.nftRuleset();
      assert.ok(rules.includes(ip), rules);
      assert.match(rules, /masquerade/);
      await lab.ok('weft', call('DEL', `masq-${mode}`, pod.path), conf({ ...c, prevResult: r }));
      assert.ok(!(await lab.nftRuleset()).includes(ip));
    });

    it('weft-ipam inline: from ranges, and from the subnet file', async () => {
      const pod = await lab.pod(`inl-${mode}`);
      const third = mode === 'direct' ? 50 : 51;
      const c = conf({
        name: `inline-${mode}`,
        bridge: `bri-${mode}`,
        isGateway: true,
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: `10.40.${third}.0/24`, rangeStart: `10.40.${third}.100` }]] },
      });
      const r = parseResult(await lab.ok('weft', call('ADD', `inl-${mode}`, pod.path), c));
      assert.deepEqual(r.ips, [{ address: `10.40.${third}.100/24`, gateway: `10.40.${third}.1`, interface: 2 }]);
      assert.equal(reservations(join(lab.dataDir, `inline-${mode}`)).get(`10.40.${third}.100`), `inl-${mode}\r\neth0`);
      await lab.ok('weft', call('CHECK', `inl-${mode}`, pod.path), { ...c, prevResult: r });
      await lab.ok('weft', { command: 'STATUS' }, c);
      await lab.ok('weft', call('DEL', `inl-${mode}`, pod.path), { ...c, prevResult: r });
      assert.equal(reservations(join(lab.dataDir, `inline-${mode}`)).size, 0);

      const c2 = conf({ name: `inlsub-${mode}`, bridge: `brs-${mode}`, isGateway: true, ipam: { type: 'weft-ipam', dataDir: lab.dataDir, subnetFile } });
      const r2 = parseResult(await lab.ok('weft', call('ADD', `inls-${mode}`, pod.path), c2));
      assert.match(r2.ips[0]!.address, /^10\.244\.7\.\d+\/24$/);
      assert.deepEqual(r2.routes, [{ dst: '10.244.0.0/16' }]);
      await lab.ok('weft', call('DEL', `inls-${mode}`, pod.path), { ...c2, prevResult: r2 });
      assert.equal(reservations(join(lab.dataDir, `inlsub-${mode}`)).size, 0);
    });

    it('weft-ipam is the IPAM plugin of the reference bridge', async () => {
      const pod = await lab.pod(`refipam-${mode}`);
      const third = mode === 'direct' ? 60 : 61;
      const c = {
        cniVersion: '1.0.0',
        name: `refipam-${mode}`,
        type: 'bridge',
        bridge: `brr-${mode}`,
        isGateway: true,
        socket: socket(),
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: `10.40.${third}.0/24` }]] },
      };
      const r = parseResult(await lab.ok('bridge', call('ADD', `refipam-${mode}`, pod.path), c));
      assert.deepEqual(r.ips, [{ interface: 2, address: `10.40.${third}.2/24`, gateway: `10.40.${third}.1` }]);
      const [eth0] = await lab.podAddrs(pod.path, 'eth0');
      assert.equal(eth0?.addr_info.find((a) => a.family === 'inet')?.local, `10.40.${third}.2`);
      await lab.ok('bridge', call('CHECK', `refipam-${mode}`, pod.path), { ...c, prevResult: r });
      await lab.ok('bridge', call('DEL', `refipam-${mode}`, pod.path), { ...c, prevResult: r });
      assert.equal(reservations(join(lab.dataDir, `refipam-${mode}`)).size, 0);
      if (mode === 'served') assert.match(lab.serverLog, /weft-ipam ADD refipam-served/);
    });
  });
}
