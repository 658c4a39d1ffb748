/**
 * `weft agent --dry-run` and the checks of a bad config, on nodes in namespaces with a real etcd.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Cluster, flannelDocConfig, NODE, WEFT, type NodeHandle } from './agent-support.js';

describe('weft agent --dry-run and bad configs', { timeout: 300_000 }, () => {
  let c: Cluster;
  let failed = false;

  before(async () => {
    c = await Cluster.create('vxlan');
    const init = await c.networkInit(flannelDocConfig('vxlan'));
    assert.equal(init.code, 0, init.stderr);
    await c.addNode('n1', 1);
    await c.addNode('n2', 2);
    c.startAgent('n1');
    await c.waitReady('n1', 0);
  });

  after(async () => {
    if (failed && c) console.log(c.logs());
    await c?.destroy();
  });

  const check = (name: string, fn: () => Promise<void>) =>
    void it(name, { timeout: 120_000 }, async () => {
      try {
        await fn();
      } catch (e) {
        failed = true;
        throw e;
      }
    });

  /** Everything a run could change: the node's kernel state, etcd's keys and the node's files. */
  async function snapshot(node: NodeHandle): Promise<Record<string, unknown>> {
    const show = async (argv: string[]) => (await c.exec(node.name, argv)).stdout;
    return {
      // A bridge's timers (the DNS device where the kernel has no dummy driver) tick by themselves.
      links: (await show(['ip', '-d', 'link', 'show'])).replace(/(_timer)\s+[\d.]+/g, '$1'),
      addrs: await show(['ip', '-4', 'addr', 'show']),
      routes: await show(['ip', 'route', 'show']),
      neigh: await show(['ip', 'neigh', 'show', 'nud', 'permanent']),
      fdb: await show(['bridge', 'fdb', 'show']),
      nft: await show(['nft', 'list', 'ruleset']),
      forward: await show(['cat', '/proc/sys/net/ipv4/ip_forward']),
      etcd: await c.etcdctl(['list', '']),
      files: [node.subnetFile, node.stateDir].map((f) => existsSync(f)),
    };
  }

  const dryRun = (node: NodeHandle, extra: string[] = []) => c.exec(node.name, [...c.agentArgs(node, extra), '--dry-run']);

  check('on a new node: prints the lease it would take and the plan of the first reconcile, and changes nothing', async () => {
    const n2 = c.node('n2');
    const before = await snapshot(n2);
    const r = await dryRun(n2);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^dry run: nothing was changed$/m);
    assert.match(r.stdout, /^lease: would take 10\.244\.\d+\.0\/24 \(a free subnet, chosen at random\)$/m);
    assert.match(r.stdout, /subnets\/10\.244\.\d+\.0-24 = \{"PublicIP":"198\.18\.0\.12","PublicIPv6":null,"BackendType":"vxlan"/);
    assert.match(r.stdout, new RegExp(`^remote leases \\(1\\): ${c.subnetOf('n1').replace(/\.1\//, '.0/').replace(/\./g, '\\.')} 198\\.18\\.0\\.11$`, 'm'));
    assert.match(r.stdout, /^the first reconcile would run:$/m);
    assert.match(r.stdout, /subnet file: would write .*subnet\.env \(FLANNEL_SUBNET 10\.244\.\d+\.1\/24, FLANNEL_MTU 1450\)/);
    assert.match(r.stdout, /^ {2}ip link add name flannel\.1 .*type vxlan id 1 local 198\.18\.0\.12 dev eth0 dstport 8472/m);
    assert.match(r.stdout, /^ {2}ip route (add|replace) 10\.244\.\d+\.0\/24 via 10\.244\.\d+\.0 dev flannel\.1 onlink/m);
    assert.match(r.stdout, /^ {2}add table ip weft$/m);
    assert.match(
      r.stdout,
      /^service proxy: would program nftables tables ip weft-proxy\* for the 0 Service\(s\) under \/weft, and set net\.bridge\.bridge-nf-call-iptables=1$/m,
    );
    assert.match(r.stdout, /^node-local DNS: would serve cluster\.local on 10\.96\.0\.10:53 \(UDP and TCP\), forwarding other names to /m);
    assert.match(r.stdout, /^ {2}ip link add name weft-dns type dummy\n {2}ip addr replace 10\.96\.0\.10\/32 dev weft-dns$/m);
    // The notrack rules are the weft table's now, first in its raw chains, in the first reconcile's transaction.
    assert.match(
      r.stdout,
      /^ {2}add rule ip weft raw-prerouting ip daddr 10\.96\.0\.10 meta l4proto \{ tcp, udp \} th dport 53 notrack comment "weft:\w+:0"\n {2}add rule ip weft raw-prerouting udp dport 8472 /m,
    );
    assert.match(
      r.stdout,
      /^ {2}add rule ip weft raw-output ip daddr 10\.96\.0\.10 .* th dport 53 notrack comment "weft:\w+:0"\n {2}add rule ip weft raw-output ip saddr 10\.96\.0\.10 .* th sport 53 notrack comment "weft:\w+:1"\n {2}add rule ip weft raw-output udp dport 8472 /m,
    );
    assert.doesNotMatch(r.stdout, /ip weft-dns/);
    assert.deepEqual(await snapshot(n2), before);
  });

  check('next to a running agent: would keep its lease, and the kernel already matches', async () => {
    const n1 = c.node('n1');
    const before = await snapshot(n1);
    const r = await dryRun(n1);
    assert.equal(r.code, 0, r.stderr);
    const subnet = c.subnetOf('n1').replace(/\.1\//, '.0/');
    assert.match(r.stdout, new RegExp(`^lease: would keep ${subnet.replace(/\./g, '\\.')} `, 'm'));
    assert.match(r.stdout, /^the first reconcile would change nothing: the kernel already matches$/m);
    assert.match(r.stdout, /^node-local DNS: would serve .*\n {2}weft-dns is in place$/m);
    assert.deepEqual(await snapshot(n1), before);
  });

  check('warns (and goes on) when --public-ip is not an address of the host', async () => {
    const r = await dryRun(c.node('n2'), ['--public-ip', '203.0.113.77']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^warning: --public-ip 203\.0\.113\.77 is not an address of this host; .* \(as behind NAT\)$/m);
    assert.match(r.stdout, /"PublicIP":"203\.0\.113\.77"/);
  });

  check("refuses a Network that contains the node's address, saying so, and leaves nothing behind", async () => {
    const prefix = '/weft-bad-network';
    await c.tool('etcd', ['etcd', c.endpoint, prefix, 'put', 'config', '{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}']);
    const n2 = c.node('n2');
    const before = await snapshot(n2);
    for (const extra of [[], ['--dry-run']]) {
      const r = await c.exec('n2', [...c.agentArgs(n2), '--etcd-prefix', prefix, ...extra]);
      assert.equal(r.code, 1, `${extra.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /Network 198\.18\.0\.0\/16 contains this node's PublicIP 198\.18\.0\.12: pod routes would capture the traffic between nodes/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    assert.deepEqual(await snapshot(n2), before);
  });

  check('weft network init refuses loopback, link-local, multicast and 0.0.0.0/0 Networks, saying which', async () => {
    for (const [network, what] of [
      ['127.0.0.0/16', 'loopback'],
      ['169.254.0.0/16', 'link-local'],
      ['224.0.0.0/8', 'multicast'],
      ['0.0.0.0/0', 'every address'],
    ] as const) {
      const r = await c.exec('etcd', [
        NODE,
        WEFT,
        'network',
        'init',
        '--config',
        `{"Network":"${network}"}`,
        '--etcd-endpoints',
        c.endpoint,
        '--etcd-prefix',
        '/weft-refused',
      ]);
      assert.equal(r.code, 1, network);
      assert.match(r.stderr, new RegExp(what), network);
    }
    const written = await c.tool('etcd', ['etcd', c.endpoint, '/weft-refused', 'list', '']);
    assert.equal(written.stdout.trim(), '[]', 'nothing written');
  });
});
