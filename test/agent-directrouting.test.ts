import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, type Pod } from './agent-support.js';

const net = (subnet: string) => subnet.replace(/\.1\//, '.0/');
const base = (subnet: string) => subnet.replace(/\.1\/\d+$/, '.0');

describe('vxlan DirectRouting: plain routes on the same segment, VXLAN across the router', { timeout: 180_000 }, () => {
  let c: Cluster;
  let a1: Pod, b1: Pod, e1: Pod;
  let failed = false;

  before(async () => {
    c = await Cluster.create('vxlan');
    const init = await c.networkInit('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}');
    assert.equal(init.code, 0, init.stderr);
    await c.addNode('n1', 1);
    await c.addNode('n2', 2);
    await c.addNode('n5', 5, 'ul2');
    for (const n of ['n1', 'n2', 'n5']) c.startAgent(n);
    for (const n of ['n1', 'n2', 'n5']) await c.waitReady(n, 2);
    a1 = await c.addPod('a1', 'n1');
    b1 = await c.addPod('b1', 'n2');
    e1 = await c.addPod('e1', 'n5');
  });

  after(async () => {
    if (failed && c) console.log(c.logs());
    await c?.destroy();
  });

  it('routes to a same-segment node via its PublicIP and to the far one over flannel.1', async () => {
    try {
      const s2 = c.subnetOf('n2');
      const s5 = c.subnetOf('n5');
      assert.match(await c.show('n1', ['ip', 'route', 'show', net(s2)]), /via 198\.18\.0\.12 dev eth0/);
      assert.match(await c.show('n1', ['ip', 'route', 'show', net(s5)]), new RegExp(`via ${base(s5).replace(/\./g, '\\.')} dev flannel\\.1 onlink`));
      assert.doesNotMatch(await c.show('n1', ['bridge', 'fdb', 'show', 'dev', 'flannel.1']), /198\.18\.0\.12/);
      for (const [from, to] of [
        [a1, b1],
        [b1, a1],
        [a1, e1],
        [e1, b1],
      ] as const) {
        assert.equal(await c.tcpEventually(from.name, to.ip), from.ip, `${from.name} → ${to.name}`);
      }
    } catch (e) {
      failed = true;
      throw e;
    }
  });
});
