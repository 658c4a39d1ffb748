/**
 * A host that already has a firewall: Docker sets iptables' FORWARD policy to DROP (with
 * iptables-nft: `table ip filter`, chain FORWARD on the forward hook). An accept in weft's own table
 * ends only that table, so the agent must make the pod Network pass Docker's chain too, as flannel's
 * --iptables-forward-rules does, keep those rules reconciled, and take them (only them) away on --cleanup.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, flannelDocConfig, waitFor, type Pod } from './agent-support.js';

/** What dockerd does to the filter table, through iptables-nft. */
const DOCKER = ['-N DOCKER-USER', '-A DOCKER-USER -j RETURN', '-A FORWARD -j DOCKER-USER', '-P FORWARD DROP'];

describe('agent on Docker hosts (FORWARD policy drop)', { timeout: 300_000 }, () => {
  let c: Cluster;
  let a1: Pod;
  let b1: Pod;
  const iptables = async (node: string, args: string) => c.show(node, ['iptables-nft', ...args.split(' ')]);
  let dockerRules = '';

  before(async () => {
    c = await Cluster.create('vxlan');
    const init = await c.networkInit(flannelDocConfig('vxlan'));
    assert.equal(init.code, 0, init.stderr);
    for (const [i, n] of ['n1', 'n2'].entries()) {
      await c.addNode(n, i + 1);
      for (const rule of DOCKER) await iptables(n, rule);
    }
    dockerRules = await iptables('n1', '-S FORWARD');
    for (const n of ['n1', 'n2']) c.startAgent(n);
    for (const n of ['n1', 'n2']) await c.waitReady(n, 1);
    a1 = await c.addPod('a1', 'n1');
    b1 = await c.addPod('b1', 'n2');
  });

  after(async () => {
    await c?.destroy();
  });

  it("pods on two nodes reach each other through Docker's FORWARD chain, which iptables can still list", async () => {
    assert.equal(await c.tcpEventually('a1', b1.ip), a1.ip);
    assert.equal(await c.tcpEventually('b1', a1.ip), b1.ip);
    const listed = await iptables('n1', '-S FORWARD');
    assert.match(listed, /^-P FORWARD DROP$/m);
    assert.match(listed, /-A FORWARD -s 10\.244\.0\.0\/16 .*-j ACCEPT/);
    assert.match(listed, /-A FORWARD -d 10\.244\.0\.0\/16 .*-j ACCEPT/);
    assert.equal((await c.status('n1')).desired?.firewall.forwardRules, true);
  });

  it('without those rules the traffic is dropped, and the agent puts them back', async () => {
    const chain = await c.show('n2', ['nft', '-a', 'list', 'chain', 'ip', 'filter', 'FORWARD']);
    const handles = [...chain.matchAll(/comment "weft forward[^"]*" # handle (\d+)/g)].map((m) => m[1]!);
    assert.equal(handles.length, 2, chain);
    // Stopped, the agent cannot restore them: the drop shows.
    assert.equal(await c.stopAgent('n2'), 0);
    for (const h of handles) await c.show('n2', ['nft', 'delete', 'rule', 'ip', 'filter', 'FORWARD', 'handle', h]);
    await assert.rejects(c.tcp('a1', b1.ip), /7000: timed out/, 'dropped by the FORWARD policy, not refused or killed');
    c.startAgent('n2');
    assert.equal(await c.tcpEventually('a1', b1.ip, 20_000), a1.ip);
  });

  it("--cleanup removes its rules and leaves Docker's chain as it was", async () => {
    assert.equal(await c.stopAgent('n1'), 0);
    const r = await c.cleanupAgent('n1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await iptables('n1', '-S FORWARD'), dockerRules);
    assert.match(await iptables('n1', '-S DOCKER-USER'), /-A DOCKER-USER -j RETURN/);
    assert.equal((await c.show('n1', ['nft', 'list', 'tables'])).includes('table ip weft\n'), false);
    await waitFor('n2 drops n1', async () => (await c.status('n2')).remoteLeases.length === 0, 10_000);
  });
});
