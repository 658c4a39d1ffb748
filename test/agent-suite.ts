/**
 * The one connectivity suite every backend runs (vxlan, host-gw, udp): three nodes on an emulated
 * underlay, a real etcd, real agents, pods wired by the real CNI plugin.
 *
 * The cluster (n1..n3, pods a1 a2 b1 c1, the outside server) is a shared fixture: every test first
 * checks it is whole (`fixture()`: agents up, in sync, two remote leases each) and puts back what it
 * changed (extra nodes stopped and their leases deleted, in `finally`), so a failure does not cascade
 * and any test can run alone (--test-name-pattern).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '../src/util/wait.js';
import { Cluster, flannelDocConfig, NODE, OUTSIDE, PORT, TOOL, WEFT, type Pod } from './agent-support.js';

const OUTAGE_S = Number(process.env.WEFT_TEST_ETCD_OUTAGE_S ?? 30);

const keyOf = (subnet: string) => `subnets/${subnet.replace(/\.1\/(\d+)$/, '.0-$1')}`;
const base = (subnet: string) => subnet.replace(/\.1\/\d+$/, '.0');
const net = (subnet: string) => subnet.replace(/\.1\//, '.0/');
const BASE_NODES = ['n1', 'n2', 'n3'];

/** A lease's value as flannel writes it into etcd. */
interface LeaseValue {
  PublicIP: string;
  BackendType?: string;
  BackendData?: { VNI: number; VtepMAC: string } | null;
}

/** One link of `ip -d -j link show`. */
interface IpLink {
  mtu: number;
  address: string;
  linkinfo: { info_kind: string; info_data: Record<string, unknown> };
}

const firstLink = (json: string): IpLink => {
  const links = JSON.parse(json) as IpLink[];
  assert.ok(links[0], `no link in ${json}`);
  return links[0];
};

export function connectivitySuite(backend: 'vxlan' | 'host-gw' | 'udp'): void {
  describe(`agent connectivity: ${backend}`, { timeout: 600_000 }, () => {
    let c: Cluster;
    let a1: Pod, a2: Pod, b1: Pod, c1: Pod;
    let failed = false;
    const vx = backend === 'vxlan';
    const udp = backend === 'udp';
    /** The Network route through flannel0 (udp routes the whole Network, not each subnet). */
    const udpRoute = ['ip', 'route', 'show', '10.244.0.0/16', 'dev', 'flannel0'];
    const ping = (from: string, host: string) => c.exec(from, ['ping', '-n', '-c', '1', '-W', '3', host], 10_000);

    const outside = { name: 'out', received: [] as string[] };

    before(async () => {
      c = await Cluster.create(backend);
      const init = await c.networkInit(flannelDocConfig(backend));
      assert.equal(init.code, 0, init.stderr);
      for (const [i, n] of BASE_NODES.entries()) await c.addNode(n, i + 1);
      for (const n of BASE_NODES) c.startAgent(n);
      for (const n of BASE_NODES) await c.waitReady(n, 2);
      a1 = await c.addPod('a1', 'n1');
      a2 = await c.addPod('a2', 'n1');
      b1 = await c.addPod('b1', 'n2');
      c1 = await c.addPod('c1', 'n3');
      await c.serve(outside);
    });

    after(async () => {
      if ((failed || process.env.WEFT_TEST_SHOW_LOGS) && c) console.log(c.logs());
      await c?.destroy();
    });

    /**
     * The shared cluster is whole: the base agents run (one that a failed test left stopped is started
     * again), each holds its lease, knows the two others and nothing more, and the kernel matches.
     */
    const fixture = async () => {
      assert.ok(c && a1 && a2 && b1 && c1, 'the cluster set-up (before) failed; see its error');
      for (const n of BASE_NODES) {
        const a = c.node(n).agent;
        if (!a || a.child.exitCode !== null || a.child.signalCode !== null) c.startAgent(n);
      }
      for (const n of BASE_NODES) await c.waitReady(n, 2, 30_000);
    };

    /** A node beyond the base three, for one test: added if this run has none by that name yet. */
    const extraNode = async (name: string, index: number, segment: 'ul' | 'ul2' = 'ul') => (c.nodes.has(name) ? c.node(name) : c.addNode(name, index, segment));

    /** Stops an extra node's agent and deletes its lease, so the base nodes are back to two remotes. */
    const retire = async (name: string) => {
      if (!c.nodes.has(name)) return;
      await c.stopAgent(name, 'SIGKILL');
      const leases = JSON.parse(await c.etcdctl(['list', 'subnets/'])) as { key: string; value: string }[];
      for (const l of leases)
        if ((JSON.parse(l.value) as { PublicIP: string }).PublicIP === c.node(name).ip) await c.etcdctl(['del', l.key.replace(/^.*?(subnets\/)/, '$1')]);
    };

    /** A /24 of the Network that no lease holds (for made-up leases and unreachable destinations). */
    const freeSubnet = async () => {
      const taken = await c.etcdctl(['list', 'subnets/']);
      for (let i = 250; i < 255; i++) if (!taken.includes(`10.244.${i}.0-24`)) return `10.244.${i}.0/24`;
      throw new Error('no free /24 in 10.244.250-254');
    };

    const check = (name: string, fn: () => Promise<void>, timeout = 120_000): void => {
      it(name, { timeout }, async () => {
        try {
          await fixture();
          await fn();
        } catch (e) {
          failed = true;
          throw e;
        }
      });
    };

    check('agents lease distinct subnets from the config as flannel documents it, and write subnet.env', async () => {
      const subnets = BASE_NODES.map((n) => c.subnetOf(n));
      assert.equal(new Set(subnets).size, 3);
      for (const s of subnets) assert.match(s, /^10\.244\.\d+\.1\/24$/);
      const env = readFileSync(c.node('n1').subnetFile, 'utf8');
      assert.match(env, /^FLANNEL_NETWORK=10\.244\.0\.0\/16$/m);
      assert.match(env, new RegExp(`^FLANNEL_MTU=${vx ? 1450 : udp ? 1472 : 1500}$`, 'm'));
      assert.match(env, /^FLANNEL_IPMASQ=true$/m);
      const lease = JSON.parse(await c.etcdctl(['get', keyOf(subnets[0]!)])) as LeaseValue;
      assert.equal(lease.PublicIP, '198.18.0.11');
      // flannel's udp backend writes no BackendType.
      assert.equal(lease.BackendType, udp ? undefined : backend);
      const st = await c.status('n1');
      assert.equal(st.remoteLeases.length, 2);
      assert.deepEqual(st.drift, []);
      assert.equal(st.plan, undefined, 'nothing to run when in sync');
      if (vx) {
        assert.equal(lease.BackendData?.VNI, 1);
        const link = firstLink(await c.show('n1', ['ip', '-d', '-j', 'link', 'show', 'flannel.1']));
        assert.equal(link.mtu, 1450);
        assert.equal(link.address, lease.BackendData?.VtepMAC);
        assert.equal(link.linkinfo.info_data.port, 8472);
        assert.equal(link.linkinfo.info_data.learning, false);
        assert.equal(link.linkinfo.info_data.local, '198.18.0.11');
        assert.match(await c.show('n1', ['ip', '-4', 'addr', 'show', 'dev', 'flannel.1']), new RegExp(`inet ${base(subnets[0]!)}/32`));
        const r = await c.show('n1', ['ip', 'route', 'show', net(subnets[1]!)]);
        assert.match(r, new RegExp(`via ${base(subnets[1]!)} dev flannel\\.1 onlink`));
        assert.match(await c.show('n1', ['ip', 'neigh', 'show', 'dev', 'flannel.1']), /PERMANENT/);
        assert.match(await c.show('n1', ['bridge', 'fdb', 'show', 'dev', 'flannel.1']), /dst 198\.18\.0\.12 self permanent/);
      } else if (udp) {
        const link = firstLink(await c.show('n1', ['ip', '-d', '-j', 'link', 'show', 'flannel0']));
        assert.equal(link.mtu, 1472);
        assert.equal(link.linkinfo.info_kind, 'tun');
        assert.equal(link.linkinfo.info_data.pi, false);
        assert.match(await c.show('n1', ['ip', '-4', 'addr', 'show', 'dev', 'flannel0']), new RegExp(`inet ${base(subnets[0]!)}/32`));
        assert.match(await c.show('n1', udpRoute), /10\.244\.0\.0\/16/);
        assert.equal((await c.show('n1', ['ip', 'route', 'show', net(subnets[1]!)])).trim(), '', 'no per-subnet routes');
        assert.deepEqual(st.desired!.udp!.peers.map((p) => p.publicIP).sort(), ['198.18.0.12', '198.18.0.13']);
        assert.equal(st.datapath!.attached, true);
      } else {
        assert.match(await c.show('n1', ['ip', 'route', 'show', net(subnets[1]!)]), /via 198\.18\.0\.12 dev eth0/);
      }
      // The status command a person runs, from outside the node namespace.
      const out = await c.topo.exec(undefined, [NODE, WEFT, 'agent', 'status', '--state-dir', c.node('n1').stateDir]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /own lease: 10\.244\./);
      assert.match(out.stdout, /remote leases \(2\)/);
      assert.match(out.stdout, /programmed: in sync with desired/);
    });

    check("pods on different nodes reach each other, and the receiver sees the sender's pod IP", async () => {
      const pods = [a1, b1, c1];
      for (const from of pods) for (const to of pods) if (from !== to) assert.equal(await c.tcp(from.name, to.ip), from.ip, `${from.name} → ${to.name}`);
      assert.equal(await c.udp('b1', a1.ip), b1.ip);
      assert.equal(await c.udp('c1', b1.ip), c1.ip);
      assert.equal(await c.tcp('a2', a1.ip), a2.ip, 'same node');
      for (const [from, to] of [
        [a1, b1],
        [c1, a1],
      ] as const) {
        const r = await ping(from.name, to.ip);
        assert.equal(r.code, 0, `ICMP echo ${from.name} → ${to.name} (ping is from iputils-ping, which ./setup installs): ${r.stdout}${r.stderr}`);
      }
    });

    check('a node reaches pods on its own node and on the others', async () => {
      for (const p of [a1, b1, c1]) await c.tcp('n1', p.ip);
      for (const p of [a1, b1, c1]) await c.tcp('n3', p.ip);
    });

    check('pod egress to the outside is masqueraded to the node IP; pod-to-pod is not', async () => {
      assert.equal(await c.tcp('a1', OUTSIDE), '198.18.0.11');
      assert.equal(await c.tcp('b1', OUTSIDE), '198.18.0.12');
      assert.equal(await c.udp('c1', OUTSIDE), '198.18.0.13');
      assert.equal(await c.tcp('b1', a1.ip), b1.ip);
    });

    check('a periodic resync restores what was deleted by hand', async () => {
      const s2 = net(c.subnetOf('n2'));
      await c.show('n1', udp ? ['ip', 'route', 'del', '10.244.0.0/16', 'dev', 'flannel0'] : ['ip', 'route', 'del', s2]);
      await c.show('n1', ['nft', 'flush', 'chain', 'ip', 'weft', 'postrouting']);
      if (vx) {
        const mac = (JSON.parse(await c.etcdctl(['get', keyOf(c.subnetOf('n3'))])) as LeaseValue).BackendData!.VtepMAC;
        await c.show('n1', ['bridge', 'fdb', 'del', mac, 'dev', 'flannel.1', 'dst', '198.18.0.13', 'self']);
        await c.show('n1', ['ip', 'neigh', 'del', base(c.subnetOf('n3')), 'dev', 'flannel.1']);
      }
      await waitFor(async () => (await c.status('n1')).drift.length === 0, { timeoutMs: 10_000, what: 'n1 repaired' });
      assert.match(await c.show('n1', udp ? udpRoute : ['ip', 'route', 'show', s2]), udp ? /10\.244\.0\.0\/16/ : /via/);
      assert.equal(await c.tcpEventually('a1', b1.ip), a1.ip);
      assert.equal(await c.tcpEventually('a1', c1.ip), a1.ip);
      assert.equal(await c.tcp('a1', OUTSIDE), '198.18.0.11');
      if (vx || udp) {
        // The device itself: recreated, and (udp) the packet loop reattaches to the new one.
        await c.show('n2', ['ip', 'link', 'del', vx ? 'flannel.1' : 'flannel0']);
        await waitFor(async () => (await c.status('n2')).drift.length === 0, { timeoutMs: 10_000, what: 'n2 device back' });
        assert.equal(await c.tcpEventually('b1', c1.ip), b1.ip);
        assert.equal(await c.tcpEventually('a1', b1.ip), a1.ip);
        if (udp) assert.ok((await c.status('n2')).datapath!.attaches >= 2, 'the packet loop reattached');
      }
      assert.ok(
        c.node('n1').agent!.log.some((l) => /add route/.test(l) && /reason=resync/.test(l)),
        'the repair is logged',
      );
    });

    check('a new node joins and is reachable without restarting the others', async () => {
      const pids = BASE_NODES.map((n) => c.node(n).agent!.child.pid);
      try {
        await extraNode('n4', 4);
        c.startAgent('n4');
        await c.waitReady('n4', 3);
        for (const n of BASE_NODES) await c.waitReady(n, 3);
        const d1 = await c.addPod('d1', 'n4');
        assert.equal(await c.tcpEventually('a1', d1.ip), a1.ip);
        assert.equal(await c.tcp('d1', c1.ip), d1.ip);
        assert.deepEqual(
          BASE_NODES.map((n) => c.node(n).agent!.child.pid),
          pids,
        );
      } finally {
        await retire('n4');
      }
    });

    /** Every base node has dropped `subnet` (held by `publicIP`): lease, route, udp peer, fdb, neighbour, nft peer. */
    const gone = async (subnet: string, publicIP: string) => {
      const ipRe = new RegExp(publicIP.replace(/\./g, '\\.'));
      for (const n of BASE_NODES) {
        await waitFor(
          async () => {
            const st = await c.status(n);
            return st.remoteLeases.length === 2 && st.drift.length === 0;
          },
          { timeoutMs: 15_000, what: `${n} forgets ${subnet}` },
        );
        assert.equal((await c.show(n, ['ip', 'route', 'show', net(subnet)])).trim(), '', `route on ${n}`);
        if (udp) assert.ok(!(await c.status(n)).desired!.udp!.peers.some((p) => p.subnet === net(subnet)), `udp peer on ${n}`);
        if (vx) {
          assert.doesNotMatch(await c.show(n, ['bridge', 'fdb', 'show', 'dev', 'flannel.1']), ipRe, `fdb on ${n}`);
          assert.doesNotMatch(
            await c.show(n, ['ip', 'neigh', 'show', 'dev', 'flannel.1']),
            new RegExp(`${base(subnet).replace(/\./g, '\\.')} `),
            `neigh on ${n}`,
          );
          assert.doesNotMatch(await c.show(n, ['nft', 'list', 'set', 'ip', 'weft', 'vxlan_peers']), ipRe, `nft peer on ${n}`);
        }
      }
    };

    /** A lease as another node's agent writes it, for a node at `publicIP` (no such node needs to run). */
    const leaseFor = (publicIP: string) =>
      JSON.stringify(
        udp
          ? { PublicIP: publicIP, PublicIPv6: null }
          : { PublicIP: publicIP, PublicIPv6: null, BackendType: backend, BackendData: vx ? { VNI: 1, VtepMAC: '02:00:00:00:99:99' } : null },
      );

    check('a deleted lease removes its routes and fdb entries everywhere', async () => {
      const subnet = await freeSubnet();
      const key = keyOf(subnet.replace(/\.0\//, '.1/'));
      await c.etcdctl(['put', key, leaseFor('198.18.0.99')]);
      try {
        for (const n of BASE_NODES) await c.waitReady(n, 3);
        if (!udp) assert.match(await c.show('n1', ['ip', 'route', 'show', subnet]), /via/, 'the route is there first');
      } finally {
        await c.etcdctl(['del', key]);
      }
      await gone(subnet, '198.18.0.99');
    });

    check('an agent whose own lease is deleted by someone else takes the same subnet back', async () => {
      const s1 = c.subnetOf('n1');
      const pid = c.node('n1').agent!.child.pid;
      assert.equal(await c.etcdctl(['del', keyOf(s1)]), 'true');
      await waitFor(
        async () => {
          const v = await c.etcdctl(['get', keyOf(s1)]);
          return v !== '' && (JSON.parse(v) as { PublicIP: string }).PublicIP === '198.18.0.11';
        },
        { timeoutMs: 15_000, what: 'n1 holds its subnet again' },
      );
      assert.ok(c.node('n1').agent!.log.some((l) => /own lease was deleted by someone else; taking the same subnet back/.test(l)));
      assert.equal(c.node('n1').agent!.child.pid, pid);
      assert.equal(c.subnetOf('n1'), s1);
      for (const n of BASE_NODES) await c.waitReady(n, 2);
      assert.equal(await c.tcpEventually('b1', a1.ip), b1.ip);
    });

    check('an expired lease (short TTL) removes its routes everywhere', async () => {
      const node = await extraNode('n4', 4);
      try {
        c.startAgent('n4', ['--lease-ttl', '3']);
        await c.waitReady('n4', 3);
        for (const n of BASE_NODES) await c.waitReady(n, 3);
        // Renewals keep it alive past one TTL. Each is a keepalive on the key's etcd lease, which writes
        // nothing, so the key must stay, at the same revision, for three TTLs: had a renewal been
        // missed, etcd would have deleted it and the agent written it back at a new revision.
        const key = keyOf(c.subnetOf('n4'));
        const revisionOf = async () => (JSON.parse(await c.etcdctl(['list', key])) as { revision: number }[])[0]?.revision;
        const first = await revisionOf();
        assert.ok(first, 'n4 holds a lease');
        const until = Date.now() + 9_500;
        while (Date.now() < until) {
          assert.equal(await revisionOf(), first, 'the lease was rewritten or lapsed instead of kept alive');
          await new Promise((r) => setTimeout(r, 200));
        }
        assert.ok(!c.node('n4').agent!.log.some((l) => /own lease was deleted/.test(l)), 'the lease never lapsed between renewals');
        assert.equal((await c.status('n1')).remoteLeases.length, 3);
        const subnet = c.subnetOf('n4');
        await c.stopAgent('n4', 'SIGKILL');
        await gone(subnet, node.ip);
      } finally {
        await retire('n4');
      }
    });

    check('an agent restart keeps its subnet and does not drop an established flow', async () => {
      const subnet = c.subnetOf('n2');
      const flow = c.spawn('a1', [NODE, TOOL, 'stream', b1.ip, String(PORT)]);
      try {
        const lines: string[] = [];
        flow.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
        /** Messages echoed so far (the tool prints `ok N` twice a second, `broken`/`closed`/`stalled` on failure). */
        const echoed = () => {
          const bad = lines.find((l) => /broken|closed|stalled/.test(l));
          if (bad) throw new assert.AssertionError({ message: `the flow broke: ${bad}` });
          const ok = lines.filter((l) => l.startsWith('ok ')).pop();
          return ok ? Number(ok.slice(3)) : 0;
        };
        /** Waits until at least `n` more messages than now went there and back. */
        const flows = async (n: number, what: string) => {
          const from = echoed();
          await waitFor(() => echoed() >= from + n, { timeoutMs: 15_000, what: `${n} more echoes ${what} (at ${from})` });
        };
        await flows(4, 'once the flow starts');
        assert.equal(lines[0], `from ${a1.ip}`);
        assert.equal(await c.stopAgent('n2'), 0);
        // Down, the agent's devices and routes stay: pod traffic keeps flowing (udp: the agent carries
        // it, so the flow pauses and TCP retransmits carry it over the restart).
        assert.match(await c.show('n2', udp ? udpRoute : ['ip', 'route', 'show', net(c.subnetOf('n1'))]), udp ? /10\.244\.0\.0\/16/ : /via/);
        if (!udp) await flows(5, "with n2's agent down");
        c.startAgent('n2');
        await c.waitReady('n2', 2);
        assert.equal(c.subnetOf('n2'), subnet);
        await flows(5, 'after the restart');
        echoed();
      } finally {
        flow.kill('SIGKILL');
      }
    });

    check(`etcd stopped for ${OUTAGE_S} s: pod traffic keeps flowing and agents reconnect`, async () => {
      const marks = BASE_NODES.map((n) => c.node(n).agent!.log.length);
      process.kill(c.etcd.pid, 'SIGSTOP');
      try {
        const end = Date.now() + OUTAGE_S * 1000;
        while (Date.now() < end) {
          assert.equal(await c.tcp('a1', b1.ip), a1.ip);
          assert.equal(await c.tcp('c1', a1.ip), c1.ip);
          await delay(Math.min(3000, Math.max(0, end - Date.now()))); // paces the probes through the outage
        }
      } finally {
        process.kill(c.etcd.pid, 'SIGCONT');
      }
      // A change made after the outage reaches every agent: their watches are back.
      const fake = keyOf((await freeSubnet()).replace(/\.0\//, '.1/'));
      await c.etcdctl(['put', fake, leaseFor('198.18.0.99')]);
      try {
        for (const n of BASE_NODES)
          await waitFor(async () => (await c.status(n)).remoteLeases.length === 3, { timeoutMs: 30_000, intervalMs: 250, what: `${n} sees the new lease` });
      } finally {
        await c.etcdctl(['del', fake]);
      }
      for (const n of BASE_NODES) await c.waitReady(n, 2, 15_000);
      BASE_NODES.forEach((n, i) => {
        const during = c.node(n).agent!.log.slice(marks[i]);
        const noisy = during.filter((l) => / (WARN|ERROR) /.test(l));
        assert.ok(noisy.length <= 4, `${n} logged ${noisy.length} warnings/errors:\n${noisy.join('\n')}`);
      });
      assert.equal(await c.tcp('a1', c1.ip), a1.ip);
    });

    check("flannel's CNI shape (subnet.env → reference bridge + host-local) gives working pods", async () => {
      const node = c.node('n3');
      const env = readFileSync(node.subnetFile, 'utf8');
      const get = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(env)![1]!;
      // What flannel's CNI plugin hands the bridge plugin, built from subnet.env.
      const conf = {
        cniVersion: '0.3.1',
        name: 'cbr0',
        plugins: [
          {
            type: 'bridge',
            name: 'cbr0',
            mtu: Number(get('FLANNEL_MTU')),
            hairpinMode: true,
            isDefaultGateway: true,
            ipMasq: get('FLANNEL_IPMASQ') !== 'true',
            isGateway: true,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet: net(get('FLANNEL_SUBNET')) }]],
              routes: [{ dst: get('FLANNEL_NETWORK') }],
              dataDir: join(node.dir, 'ipam'),
            },
          },
        ],
      };
      const file = join(node.dir, 'flannel.conflist');
      writeFileSync(file, JSON.stringify(conf));
      const f1 = await c.addPod('f1', 'n3', file);
      assert.equal(await c.tcp('a1', f1.ip), a1.ip);
      assert.equal(await c.tcp('f1', b1.ip), f1.ip);
      assert.equal(await c.tcp('f1', OUTSIDE), '198.18.0.13');
    });

    if (vx) {
      check('a forged VXLAN packet from a non-node is dropped before it reaches a pod', async () => {
        const counter = async () => {
          const out = JSON.parse(await c.show('n1', ['nft', '-j', 'list', 'counter', 'ip', 'weft', 'vxlan_forged'])) as {
            nftables: { counter?: { packets: number } }[];
          };
          const packets = out.nftables.find((o) => o.counter)?.counter?.packets;
          assert.ok(packets !== undefined, 'the vxlan_forged counter exists');
          return packets;
        };
        const dev = (await c.status('n1')).desired!.device!;
        const mac = dev.kind === 'tun' ? '' : dev.mac;
        const spoofed = base(c.subnetOf('n2')).replace(/\.0$/, '.99');
        const before = await counter();
        a1.received.length = 0;
        for (let i = 0; i < 3; i++) assert.equal((await c.tool('out', ['forge', '198.18.0.11', '1', mac, spoofed, a1.ip, String(PORT)])).code, 0);
        await waitFor(async () => (await counter()) >= before + 3, { timeoutMs: 30_000, what: 'the drop counter rises' });
        // Control: the same packet from a node holding a lease is decapsulated and delivered, after
        // the forged ones; only it reaches the pod.
        assert.equal((await c.tool('n2', ['forge', '198.18.0.11', '1', mac, spoofed, a1.ip, String(PORT)])).code, 0);
        await waitFor(() => a1.received.some((l) => l === `got ${spoofed} forged`), { timeoutMs: 30_000, what: 'the control packet arrives' });
        assert.deepEqual(
          a1.received.filter((l) => /forged/.test(l)),
          [`got ${spoofed} forged`],
          'the pod got the control packet only',
        );
      });
    }

    if (udp) {
      check('forged and garbage datagrams to the udp port reach no pod; the agent keeps forwarding and counts the drops', async () => {
        const dropped = async () => (await c.status('n1')).datapath!.counters;
        const before = await dropped();
        const spoofed = base(c.subnetOf('n2')).replace(/\.0$/, '.99');
        a1.received.length = 0;
        // From the outside world (through the router) and from an underlay address holding no lease (etcd's).
        for (const from of ['out', 'etcd']) {
          for (let i = 0; i < 3; i++) {
            assert.equal((await c.tool(from, ['forge-udp', '198.18.0.11', '8285', spoofed, a1.ip, String(PORT)])).code, 0);
            assert.equal((await c.tool(from, ['garbage', '198.18.0.11', '8285', '5'])).code, 0);
          }
        }
        // Garbage from a node that does hold a lease: not a packet, dropped as malformed.
        assert.equal((await c.tool('n2', ['garbage', '198.18.0.11', '8285', '5'])).code, 0);
        await waitFor(
          async () => {
            const now = await dropped();
            return now.droppedUnknownSource! >= before.droppedUnknownSource! + 36 && now.droppedMalformed! >= before.droppedMalformed! + 1;
          },
          { timeoutMs: 30_000, what: 'the drop counters rise' },
        );
        // The agent still forwards real traffic, both ways.
        assert.equal(await c.tcp('b1', a1.ip), b1.ip);
        assert.equal(await c.tcp('a1', c1.ip), a1.ip);
        assert.equal((await c.status('n1')).datapath!.attached, true);
        // Control: the same forged packet from a node holding a lease is delivered (flannel's wire format).
        assert.equal((await c.tool('n2', ['forge-udp', '198.18.0.11', '8285', spoofed, a1.ip, String(PORT)])).code, 0);
        await waitFor(() => a1.received.some((l) => l === `got ${spoofed} forged`), { timeoutMs: 30_000, what: 'the control packet arrives' });
        assert.deepEqual(
          a1.received.filter((l) => /forged/.test(l)),
          [`got ${spoofed} forged`],
          'the pod got the control packet only',
        );
        // And the status a person reads shows the counter.
        const text = await c.topo.exec(undefined, [NODE, WEFT, 'agent', 'status', '--state-dir', c.node('n1').stateDir]);
        assert.match(text.stdout, /packet loop: attached; .* dropped: [1-9]\d* from sources without a lease/);
      });

      check('a destination in no lease gets ICMP net unreachable from flannel0', async () => {
        const before = (await c.status('n1')).datapath!.counters.netUnreachable!;
        const dst = (await freeSubnet()).replace(/\.0\/24$/, '.7');
        const r = await ping('a1', dst);
        const from = base(c.subnetOf('n1')).replace(/\./g, '\\.');
        assert.match(
          r.stdout,
          new RegExp(`From ${from} icmp_seq=1 Destination Net Unreachable`),
          `ping ${dst} (from iputils-ping, which ./setup installs): ${r.stdout}${r.stderr}`,
        );
        assert.ok((await c.status('n1')).datapath!.counters.netUnreachable! > before);
      });
    }

    check(
      vx || udp
        ? `a node on another L2 segment is reached over ${vx ? 'VXLAN' : 'udp'} through the router`
        : 'a node on another L2 segment: host-gw says why and installs no route',
      async () => {
        try {
          await extraNode('n5', 5, 'ul2');
          c.startAgent('n5');
          await c.waitReady('n5', 3);
          for (const n of BASE_NODES) await c.waitReady(n, 3);
          const s5 = c.subnetOf('n5');
          if (vx || udp) {
            const e1 = c.pods.get('e1') ?? (await c.addPod('e1', 'n5'));
            assert.equal(await c.tcpEventually('a1', e1.ip), a1.ip);
            assert.equal(await c.tcp('e1', b1.ip), e1.ip);
          } else {
            const st = await c.status('n1');
            const skipped = st.desired!.skipped.find((k) => k.subnet === net(s5));
            assert.ok(skipped, JSON.stringify(st.desired));
            assert.match(skipped.reason, /198\.19\.0\.15 is not on eth0's L2 segment \(198\.18\.0\.0\/24\); host-gw needs every node on one segment/);
            assert.equal((await c.show('n1', ['ip', 'route', 'show', net(s5)])).trim(), '', 'no black-hole route');
            assert.ok(c.node('n1').agent!.log.some((l) => /WARN +not routing to a remote subnet/.test(l) && l.includes(net(s5))));
            const text = await c.topo.exec(undefined, [NODE, WEFT, 'agent', 'status', '--state-dir', c.node('n1').stateDir]);
            assert.match(text.stdout, /NOT ROUTED: 198\.19\.0\.15 is not on eth0's L2 segment/);
          }
        } finally {
          await retire('n5');
        }
      },
    );

    check('--cleanup removes the devices, routes and rules, and gives up the lease', async () => {
      // Its own node (n6), so the base three stay whole for the other tests.
      await extraNode('n6', 6);
      try {
        c.startAgent('n6');
        await c.waitReady('n6', 3);
        for (const n of BASE_NODES) await c.waitReady(n, 3);
        const s6 = c.subnetOf('n6');
        assert.equal(await c.stopAgent('n6'), 0);
        const r = await c.cleanupAgent('n6');
        assert.equal(r.code, 0, r.stderr);
        assert.doesNotMatch(await c.show('n6', ['ip', 'link', 'show']), /flannel/);
        assert.equal((await c.show('n6', ['ip', 'route', 'show', net(c.subnetOf('n1'))])).trim(), '');
        assert.equal((await c.show('n6', ['nft', 'list', 'tables'])).includes('table ip weft\n'), false);
        assert.equal(await c.etcdctl(['get', keyOf(s6)]), '');
        for (const n of BASE_NODES) await waitFor(async () => (await c.status(n)).remoteLeases.length === 2, { timeoutMs: 10_000, what: `${n} drops n6` });
      } finally {
        await retire('n6');
      }
    });
  });
}
