import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCidr } from '../ip/cidr.js';
import type { Link, NftTableState, Route } from '../kernel/state.js';
import type { Lease } from '../subnet/lease.js';
import { firewallChains, FORGED_COUNTER, foreignForwardChains, forwardRules, notrackRules, PEER_SET } from './firewall.js';
import { HostGwBackend } from './hostgw.js';
import { changeKind, ownedRoute, reconcile, teardown, type ActualState } from './reconcile.js';
import type { DesiredState, NodeInfo } from './types.js';
import { UdpBackend } from './udp.js';
import { VxlanBackend } from './vxlan.js';

const node: NodeInfo = { name: 'n1', iface: 'eth0', ifaceMtu: 1500, publicIP: '198.18.0.11', ifaceNets: [parseCidr('198.18.0.11/24')] };
const network = parseCidr('10.244.0.0/16');
const lease = (subnet: string, publicIP: string, type = 'vxlan', mac?: string): Lease => ({
  subnet: parseCidr(subnet),
  attrs: { publicIP, backendType: type, ...(mac ? { backendData: { VNI: 1, VtepMAC: mac } } : {}) },
});
const own = lease('10.244.1.0/24', '198.18.0.11', 'vxlan', '02:00:00:00:00:01');
const r2 = lease('10.244.2.0/24', '198.18.0.12', 'vxlan', '02:00:00:00:00:02');
const r3 = lease('10.244.3.0/24', '198.19.0.13', 'vxlan', '02:00:00:00:00:03');
const vxlan = (directRouting = false) => new VxlanBackend(node, { vni: 1, port: 8472, directRouting, mac: '02:00:00:00:00:01' });
const empty: ActualState = { deviceAddrs: [], routes: [], neighbours: [], fdb: [], foreign: [], forwarding: true };
const route = (r: Partial<Route> & { dst: string }): Route => ({ family: 4, protocol: 'boot', table: 254, onlink: false, ...r });

/** The kernel as it would look after applying `desired` (what the readers would return). */
function programmed(d: DesiredState, extra: Partial<ActualState> = {}): ActualState {
  const dev = d.device;
  const link: Link | undefined =
    dev?.kind === 'tun'
      ? { index: 5, name: dev.name, mtu: dev.mtu, up: true, kind: 'tun', tun: { type: 'tun', pi: false, multiQueue: false } }
      : dev && {
          index: 5,
          name: dev.name,
          mac: dev.mac,
          mtu: dev.mtu,
          up: true,
          kind: 'vxlan',
          vxlan: { vni: dev.vni, local: dev.local, dev: dev.dev, port: dev.port, learning: false },
        };
  const chains = firewallChains(d.firewall);
  const table: NftTableState = {
    family: 'ip',
    name: 'weft',
    chains: new Map(chains.map((c) => [c.chain.name, { name: c.chain.name, rules: c.comments.map((comment, i) => ({ handle: i + 1, comment })) }])),
    sets: new Map(d.firewall.vxlan ? [[PEER_SET, [...d.firewall.vxlan.peers]]] : []),
    counters: new Map(d.firewall.vxlan ? [[FORGED_COUNTER, { packets: 0, bytes: 0 }]] : []),
  };
  return {
    ...(link ? { device: link } : {}),
    deviceAddrs: dev ? [dev.address] : [],
    routes: [
      route({ dst: '198.18.0.0/24', dev: 'eth0', protocol: 'kernel' }),
      route({ dst: d.ownSubnet, dev: 'cni0', protocol: 'kernel' }),
      ...d.routes.map((r) => route({ dst: r.dst, ...(r.via ? { via: r.via } : {}), dev: r.dev, onlink: r.onlink })),
    ],
    neighbours: d.neighbours.map((n) => ({ dst: n.ip, dev: n.dev, mac: n.mac, permanent: true })),
    fdb: d.fdb.map((f) => ({ mac: f.mac, dev: f.dev, dst: f.dst, self: true, permanent: true })),
    table,
    foreign: [],
    forwarding: true,
    ...extra,
  };
}

describe('vxlan backend: desired state', () => {
  it('follows flannel: flannel.1, base/32, MTU - 50, neighbour + fdb + onlink route per remote', () => {
    const d = vxlan().desired(own, [r3, r2], { network, ipMasq: true });
    assert.deepEqual(d.device, {
      name: 'flannel.1',
      vni: 1,
      port: 8472,
      local: '198.18.0.11',
      dev: 'eth0',
      mac: '02:00:00:00:00:01',
      mtu: 1450,
      address: '10.244.1.0/32',
    });
    assert.deepEqual(d.routes, [
      { dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flannel.1', onlink: true },
      { dst: '10.244.3.0/24', via: '10.244.3.0', dev: 'flannel.1', onlink: true },
    ]);
    assert.deepEqual(d.neighbours[0], { ip: '10.244.2.0', mac: '02:00:00:00:00:02', dev: 'flannel.1' });
    assert.deepEqual(d.fdb[1], { mac: '02:00:00:00:00:03', dst: '198.19.0.13', dev: 'flannel.1' });
    assert.deepEqual(d.firewall.vxlan, { port: 8472, peers: ['198.18.0.12', '198.19.0.13'] });
    assert.deepEqual(vxlan().leaseAttrs(), { publicIP: '198.18.0.11', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } });
  });

  it('DirectRouting: a plain route to remotes on the same segment, VXLAN to the rest', () => {
    const d = vxlan(true).desired(own, [r2, r3], { network, ipMasq: true });
    assert.deepEqual(d.routes, [
      { dst: '10.244.2.0/24', via: '198.18.0.12', dev: 'eth0', onlink: false },
      { dst: '10.244.3.0/24', via: '10.244.3.0', dev: 'flannel.1', onlink: true },
    ]);
    assert.equal(d.fdb.length, 1);
  });

  it('skips a lease without a VtepMAC instead of programming garbage', () => {
    const d = vxlan().desired(own, [lease('10.244.4.0/24', '198.18.0.14', 'host-gw')], { network, ipMasq: true });
    assert.equal(d.routes.length, 0);
    assert.match(d.skipped[0]!.reason, /VtepMAC/);
  });
});

describe('host-gw backend: desired state', () => {
  it('routes via the PublicIP on the same segment and refuses (with a reason) the others', () => {
    const b = new HostGwBackend(node);
    const d = b.desired(
      lease('10.244.1.0/24', '198.18.0.11', 'host-gw'),
      [lease('10.244.2.0/24', '198.18.0.12', 'host-gw'), lease('10.244.3.0/24', '198.19.0.13', 'host-gw')],
      { network, ipMasq: true },
    );
    assert.deepEqual(d.routes, [{ dst: '10.244.2.0/24', via: '198.18.0.12', dev: 'eth0', onlink: false }]);
    assert.equal(d.skipped.length, 1);
    assert.match(d.skipped[0]!.reason, /not on eth0's L2 segment/);
    assert.equal(d.device, undefined);
    assert.equal(d.firewall.vxlan, undefined);
    assert.equal(b.mtu, 1500);
  });
});

describe('reconcile', () => {
  const desired = vxlan().desired(own, [r2, r3], { network, ipMasq: true });

  it('builds everything from nothing, device first and routes after their neighbours', () => {
    const { plan, changes } = reconcile(undefined, desired, empty);
    const text = plan.render();
    assert.match(text, /ip link add name flannel\.1 mtu 1450 address 02:00:00:00:00:01 type vxlan id 1 local 198\.18\.0\.11 dev eth0 dstport 8472 nolearning/);
    assert.match(text, /bridge fdb replace 02:00:00:00:00:02 dev flannel\.1 dst 198\.18\.0\.12 self permanent/);
    assert.match(text, /ip neigh replace 10\.244\.2\.0 lladdr 02:00:00:00:00:02 dev flannel\.1 nud permanent/);
    assert.match(text, /ip route replace 10\.244\.3\.0\/24 via 10\.244\.3\.0 dev flannel\.1 onlink/);
    assert.match(text, /add rule ip weft postrouting ip saddr 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 masquerade/);
    // The encapsulated packets skip conntrack, and forged ones are dropped, in one raw chain (data path cost in docs/architecture.md).
    assert.match(text, /add chain ip weft raw-prerouting \{ type filter hook prerouting priority raw; policy accept; \}/);
    assert.match(text, /add rule ip weft raw-prerouting udp dport 8472 ip saddr @vxlan_peers notrack accept/);
    assert.match(text, /add rule ip weft raw-prerouting udp dport 8472 fib daddr type \{ local, broadcast, multicast \} counter name vxlan_forged drop/);
    assert.doesNotMatch(text, /chain ip weft input/);
    assert.match(text, /add rule ip weft raw-output udp dport 8472 ip daddr @vxlan_peers notrack/);
    assert.match(text, /add element ip weft vxlan_peers \{ 198\.18\.0\.12, 198\.19\.0\.13 \}/);
    assert.ok(text.indexOf('link add') < text.indexOf('neigh replace') && text.indexOf('neigh replace') < text.indexOf('route replace'));
    assert.ok(changes.length >= 8);
  });

  it('names the kind of each change (the drift metric counts repairs by it)', () => {
    const fresh = reconcile(undefined, desired, { ...empty, forwarding: false }).changes.map(changeKind);
    assert.deepEqual(fresh, ['sysctl', 'device', 'fdb', 'fdb', 'neighbour', 'neighbour', 'route', 'route', 'firewall', 'vxlan_peers']);
    const a = programmed(desired);
    a.deviceAddrs = ['10.244.1.0/32', '10.244.9.0/32'];
    a.device = { ...a.device!, up: false };
    a.routes.push(route({ dst: '10.244.9.0/24', via: '10.244.9.0', dev: 'flannel.1', onlink: true }));
    a.table!.chains.delete('raw-output');
    const stale = reconcile(undefined, desired, a).changes;
    assert.deepEqual(
      stale.map((c) => `${changeKind(c)}: ${c}`),
      [
        'address: remove stale address 10.244.9.0/32 from flannel.1',
        'device: set flannel.1 up',
        'route: remove stale route 10.244.9.0/24 via 10.244.9.0 dev flannel.1',
        'firewall: add nftables chain raw-output',
      ],
    );
  });

  it('is idempotent: a kernel that matches gives an empty plan', () => {
    const { plan, changes } = reconcile(undefined, desired, programmed(desired));
    assert.deepEqual(changes, []);
    assert.ok(plan.empty);
  });

  it('restores exactly what was deleted by hand', () => {
    const actual = programmed(desired);
    actual.routes = actual.routes.filter((r) => r.dst !== '10.244.2.0/24');
    actual.fdb = actual.fdb.slice(1);
    actual.neighbours = actual.neighbours.slice(0, 1);
    const { changes } = reconcile(undefined, desired, actual);
    assert.deepEqual(changes, [
      'add fdb 02:00:00:00:00:02 dst 198.18.0.12 dev flannel.1',
      'add neighbour 10.244.3.0 lladdr 02:00:00:00:00:03 dev flannel.1',
      'add route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
    ]);
  });

  it('recreates a deleted device with everything on it', () => {
    const actual = programmed(desired);
    delete actual.device;
    actual.neighbours = [];
    actual.fdb = [];
    actual.routes = actual.routes.filter((r) => r.dev !== 'flannel.1');
    const { changes } = reconcile(undefined, desired, actual);
    assert.match(changes[0]!, /^create device flannel\.1/);
    assert.equal(changes.filter((c) => c.startsWith('add route')).length, 2);
  });

  it('recreates a device with the wrong VNI, and fixes a wrong MTU in place', () => {
    const a = programmed(desired);
    a.device!.vxlan!.vni = 7;
    assert.match(reconcile(undefined, desired, a).changes[0]!, /recreate device flannel\.1: it has VNI 7/);
    const b = programmed(desired);
    b.device!.mtu = 1500;
    assert.deepEqual(reconcile(undefined, desired, b).changes, ['set flannel.1 mac 02:00:00:00:00:01 mtu 1450']);
  });

  it('removes what a removed lease left behind, and only what it owns', () => {
    const fewer = vxlan().desired(own, [r2], { network, ipMasq: true });
    const actual = programmed(desired);
    actual.routes.push(route({ dst: '10.245.0.0/24', via: '198.18.0.1', dev: 'eth0' }), route({ dst: 'default', via: '198.18.0.1', dev: 'eth0' }));
    const { changes, plan } = reconcile(undefined, fewer, actual);
    assert.deepEqual(changes.sort(), [
      'remove stale fdb 02:00:00:00:00:03 dst 198.19.0.13 dev flannel.1',
      'remove stale neighbour 10.244.3.0 dev flannel.1',
      'remove stale route 10.244.3.0/24 via 10.244.3.0 dev flannel.1',
      'stop allowing VXLAN from 198.19.0.13',
    ]);
    assert.match(plan.render(), /delete element ip weft vxlan_peers \{ 198\.19\.0\.13 \}/);
  });

  it('rewrites an nftables chain whose rules were changed by hand, leaving the others', () => {
    const actual = programmed(desired);
    actual.table!.chains.get('postrouting')!.rules.pop();
    const { changes, plan } = reconcile(undefined, desired, actual);
    assert.deepEqual(changes, ['rewrite nftables chain postrouting']);
    assert.match(plan.render(), /flush chain ip weft postrouting\ndelete chain ip weft postrouting\nadd chain ip weft postrouting/);
    assert.doesNotMatch(plan.render(), /chain ip weft raw-prerouting/);
  });

  it('drops the masquerade chain when ip-masq is off, and enables forwarding', () => {
    const noMasq = vxlan().desired(own, [r2, r3], { network, ipMasq: false });
    const { changes } = reconcile(undefined, noMasq, programmed(desired, { forwarding: false }));
    assert.deepEqual(changes, ['enable net.ipv4.ip_forward', 'remove nftables chain postrouting']);
  });

  it('owns routes inside the Network except its own subnet and kernel routes', () => {
    const owned = ownedRoute('10.244.0.0/16', '10.244.1.0/24');
    assert.equal(owned(route({ dst: '10.244.2.0/24', via: '198.18.0.12' })), true);
    assert.equal(owned(route({ dst: '10.244.1.0/24', dev: 'cni0' })), false);
    assert.equal(owned(route({ dst: '10.244.0.0/16', dev: 'eth0' })), false);
    assert.equal(owned(route({ dst: '10.244.9.0/24', dev: 'x', protocol: 'kernel' })), false);
    assert.equal(owned(route({ dst: '10.96.0.0/12', dev: 'x' })), false);
  });

  it('teardown removes routes, the device and the table', () => {
    const a = programmed(vxlan(true).desired(own, [r2, r3], { network, ipMasq: true }));
    const { changes } = teardown(undefined, '10.244.0.0/16', '10.244.1.0/24', { links: [a.device!], routes: a.routes, ruleset: [a.table!] });
    assert.deepEqual(changes, [
      'remove route 10.244.2.0/24 via 198.18.0.12',
      'remove device flannel.1 (with its routes, neighbours and fdb entries)',
      'remove nftables table ip weft',
    ]);
  });
});

describe('node-local DNS: its notrack rules in the raw chains', () => {
  const dns = '10.96.0.10';
  const to = 'ip daddr 10.96.0.10 meta l4proto { tcp, udp } th dport 53 notrack';
  const from = 'ip saddr 10.96.0.10 meta l4proto { tcp, udp } th sport 53 notrack';
  const rules = (d: DesiredState) => new Map(firewallChains(d.firewall).map((c) => [c.chain.name, c.rules]));
  const hostgw = (options: { dns?: string; ipMasq?: boolean } = {}) =>
    new HostGwBackend(node).desired(lease('10.244.1.0/24', '198.18.0.11', 'host-gw'), [lease('10.244.2.0/24', '198.18.0.12', 'host-gw')], {
      network,
      ipMasq: options.ipMasq ?? true,
      ...(options.dns ? { dns: options.dns } : {}),
    });

  it('are the rules notrackRules gives, per hook', () => {
    assert.deepEqual(notrackRules(dns), { prerouting: [to], output: [to, from] });
  });

  it('vxlan: the DNS rules come first in the raw chains, the VXLAN rules after', () => {
    const d = vxlan().desired(own, [r2], { network, ipMasq: true, dns });
    assert.equal(d.firewall.dns, dns);
    const r = rules(d);
    assert.deepEqual(r.get('raw-prerouting'), [
      to,
      'udp dport 8472 ip saddr @vxlan_peers notrack accept',
      'udp dport 8472 fib daddr type { local, broadcast, multicast } counter name vxlan_forged drop',
    ]);
    assert.deepEqual(r.get('raw-output'), [to, from, 'udp dport 8472 ip daddr @vxlan_peers notrack']);
  });

  it('host-gw and udp get raw chains for DNS alone, without the VXLAN peer set or counter', () => {
    const udp = new UdpBackend(node, { port: 8285 }).desired(lease('10.244.1.0/24', '198.18.0.11', 'udp'), [], { network, ipMasq: false, dns });
    for (const d of [hostgw({ dns }), udp]) {
      assert.equal(d.firewall.vxlan, undefined);
      const r = rules(d);
      assert.deepEqual(r.get('raw-prerouting'), [to]);
      assert.deepEqual(r.get('raw-output'), [to, from]);
      const { plan, changes } = reconcile(undefined, d, empty);
      const text = plan.render();
      assert.match(text, /add chain ip weft raw-prerouting \{ type filter hook prerouting priority raw; policy accept; \}/);
      assert.match(text, /add rule ip weft raw-output ip saddr 10\.96\.0\.10 meta l4proto \{ tcp, udp \} th sport 53 notrack comment "weft:/);
      assert.doesNotMatch(text, /vxlan_peers|vxlan_forged/);
      assert.ok(changes.includes('create nftables table ip weft'), changes.join('\n'));
      assert.deepEqual(reconcile(undefined, d, programmed(d)).changes, []);
    }
  });

  it('without DNS (--no-dns) host-gw has no raw chains, and a table with them loses them', () => {
    const off = hostgw();
    assert.deepEqual([...rules(off).keys()], ['postrouting']);
    assert.deepEqual(reconcile(undefined, off, programmed(hostgw({ dns }))).changes, [
      'remove nftables chain raw-prerouting',
      'remove nftables chain raw-output',
    ]);
    assert.deepEqual(firewallChains(hostgw({ ipMasq: false }).firewall), []);
  });

  it('another DNS IP, or DNS turned off on vxlan, rewrites both raw chains and nothing else', () => {
    const d = vxlan().desired(own, [r2], { network, ipMasq: true, dns });
    for (const next of [vxlan().desired(own, [r2], { network, ipMasq: true, dns: '10.96.0.53' }), vxlan().desired(own, [r2], { network, ipMasq: true })]) {
      const { changes, plan } = reconcile(undefined, next, programmed(d));
      assert.deepEqual(changes, ['rewrite nftables chain raw-prerouting', 'rewrite nftables chain raw-output']);
      assert.doesNotMatch(plan.render(), /10\.96\.0\.10/);
    }
  });

  it('a DNS rule deleted by hand is put back, the chain rewritten whole', () => {
    const d = hostgw({ dns });
    const a = programmed(d);
    a.table!.chains.get('raw-output')!.rules.shift();
    const { changes, plan } = reconcile(undefined, d, a);
    assert.deepEqual(
      changes.map((c) => `${changeKind(c)}: ${c}`),
      ['firewall: rewrite nftables chain raw-output'],
    );
    assert.match(
      plan.render(),
      /flush chain ip weft raw-output\ndelete chain ip weft raw-output\nadd chain ip weft raw-output .*\nadd rule ip weft raw-output ip daddr 10\.96\.0\.10 .*\nadd rule ip weft raw-output ip saddr 10\.96\.0\.10 /,
    );
  });
});

describe("forwarding through other tables (Docker's FORWARD policy drop)", () => {
  const desired = vxlan().desired(own, [r2], { network, ipMasq: true });
  const docker = (policy: string, ours: { handle: number; comment: string }[] = []): NftTableState => ({
    family: 'ip',
    name: 'filter',
    chains: new Map([
      ['FORWARD', { name: 'FORWARD', hook: 'forward', type: 'filter', prio: 0, policy, rules: [{ handle: 4 }, ...ours] }],
      ['DOCKER-USER', { name: 'DOCKER-USER', rules: [{ handle: 2 }] }],
    ]),
    sets: new Map(),
    counters: new Map(),
  });
  const want = forwardRules('10.244.0.0/16');

  it('appends accept rules for the Network to a forward chain that drops by policy', () => {
    const { changes, plan } = reconcile(undefined, desired, programmed(desired, { foreign: foreignForwardChains([docker('drop')]) }));
    assert.deepEqual(changes, ['accept the pod Network in ip filter FORWARD (its policy is drop)']);
    const text = plan.render();
    assert.match(text, new RegExp(`add rule ip filter FORWARD ip saddr 10\\.244\\.0\\.0/16 counter accept comment "${want.comments[0]}"`));
    assert.match(text, /add rule ip filter FORWARD ip daddr 10\.244\.0\.0\/16 counter accept/);
    assert.doesNotMatch(text, /DOCKER-USER|policy/);
  });

  it('is idempotent, leaves accepting chains alone, and removes its rules when turned off', () => {
    const ours = want.comments.map((comment, i) => ({ handle: 10 + i, comment }));
    assert.deepEqual(reconcile(undefined, desired, programmed(desired, { foreign: foreignForwardChains([docker('drop', ours)]) })).changes, []);
    assert.deepEqual(reconcile(undefined, desired, programmed(desired, { foreign: foreignForwardChains([docker('accept')]) })).changes, []);
    const off = vxlan().desired(own, [r2], { network, ipMasq: true, forwardRules: false });
    const r = reconcile(undefined, off, programmed(off, { foreign: foreignForwardChains([docker('drop', ours)]) }));
    assert.deepEqual(r.changes, ["remove weft's accept rules from ip filter FORWARD"]);
    assert.match(r.plan.render(), /delete rule ip filter FORWARD handle 10\ndelete rule ip filter FORWARD handle 11/);
  });

  it('teardown removes only its own rules from the foreign chain', () => {
    const ours = want.comments.map((comment, i) => ({ handle: 10 + i, comment }));
    const { changes, plan } = teardown(undefined, '10.244.0.0/16', '10.244.1.0/24', { links: [], routes: [], ruleset: [docker('drop', ours)] });
    assert.deepEqual(changes, ["remove weft's accept rules from ip filter FORWARD"]);
    assert.doesNotMatch(plan.render(), /handle 4|delete chain|delete table ip filter/);
  });
});

describe('udp backend: desired state and reconcile', () => {
  const udpLease = (subnet: string, publicIP: string): Lease => ({ subnet: parseCidr(subnet), attrs: { publicIP } });
  const udp = () => new UdpBackend(node, { port: 8285 });
  const u1 = udpLease('10.244.1.0/24', '198.18.0.11');
  const u2 = udpLease('10.244.2.0/24', '198.18.0.12');
  const u3 = udpLease('10.244.3.0/24', '198.19.0.13');
  const desired = udp().desired(u1, [u3, u2, r2], { network, ipMasq: true });

  it('follows flannel: flannel0 TUN with base/32, MTU - 28, one route for the Network, a lease without BackendType', () => {
    assert.equal(udp().mtu, 1472);
    assert.deepEqual(udp().leaseAttrs(), { publicIP: '198.18.0.11' });
    assert.deepEqual(desired.device, { kind: 'tun', name: 'flannel0', mtu: 1472, address: '10.244.1.0/32' });
    assert.deepEqual(desired.routes, [{ dst: '10.244.0.0/16', dev: 'flannel0', onlink: false }]);
    assert.deepEqual(desired.udp, {
      device: 'flannel0',
      address: '10.244.1.0/32',
      ownSubnet: '10.244.1.0/24',
      publicIP: '198.18.0.11',
      port: 8285,
      peers: [
        { subnet: '10.244.2.0/24', publicIP: '198.18.0.12' },
        { subnet: '10.244.3.0/24', publicIP: '198.19.0.13' },
      ],
    });
    assert.equal(desired.skipped.length, 1, 'the vxlan lease for the same subnet is not a udp peer');
    assert.match(desired.skipped[0]!.reason, /its backend is vxlan, not udp/);
    assert.equal(desired.firewall.vxlan, undefined);
  });

  it('builds flannel0 from nothing with iproute2 (persistent TUN), then the route', () => {
    const { plan, changes } = reconcile(undefined, desired, empty);
    const text = plan.render();
    assert.match(
      text,
      /ip tuntap add dev flannel0 mode tun\nip link set dev flannel0 mtu 1472\nip addr add 10\.244\.1\.0\/32 dev flannel0\nip link set dev flannel0 up\nsysctl -w net\/ipv4\/conf\/flannel0\/accept_local=1\nip route replace 10\.244\.0\.0\/16 dev flannel0\n/,
    );
    const a = programmed(desired);
    a.tunAcceptLocal = false;
    assert.deepEqual(reconcile(undefined, desired, a).changes, ['set flannel0 accept_local']);
    assert.equal(changes[0], 'create device flannel0 (tun, mtu 1472)');
    assert.ok(changes.includes('add route 10.244.0.0/16 dev flannel0'));
  });

  it('is idempotent, and repairs a deleted route, a wrong MTU and a device of the wrong kind', () => {
    assert.deepEqual(reconcile(undefined, desired, programmed(desired)).changes, []);
    const a = programmed(desired);
    a.routes = a.routes.filter((r) => r.dev !== 'flannel0');
    a.device!.mtu = 1500;
    assert.deepEqual(reconcile(undefined, desired, a).changes, ['set flannel0 mtu 1472', 'add route 10.244.0.0/16 dev flannel0']);
    const b = programmed(desired);
    b.device!.kind = 'dummy';
    assert.match(reconcile(undefined, desired, b).changes[0]!, /recreate device flannel0: it is a dummy device, not tun/);
  });

  it('teardown removes flannel0 (and with it the Network route)', () => {
    const a = programmed(desired);
    const { changes } = teardown(undefined, '10.244.0.0/16', '10.244.1.0/24', { links: [a.device!], routes: a.routes, ruleset: [] });
    assert.deepEqual(changes, ['remove device flannel0 (with its routes, neighbours and fdb entries)']);
  });
});
