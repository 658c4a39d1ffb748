import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as c from './codec.js';
import { errnoKind } from './errors.js';
import { nftTx, renderTx } from './nft.js';
import * as op from './ops.js';
import { Plan } from './plan.js';

describe('ops render to the iproute2/bridge/nft commands that make the same change', () => {
  it('links, with the namespace as -n NAME or nsenter', () => {
    const p = new Plan().add(
      op.addVeth({
        ns: '/run/netns/a',
        name: 'v0',
        mtu: 1400,
        mac: '02:00:00:00:00:01',
        peer: { name: 'eth0', netns: '/run/netns/b', mac: '02:00:00:00:00:02' },
      }),
      op.addVxlan({ ns: undefined, name: 'flannel.1', vni: 1, local: '198.18.0.11', dev: 'eth0', port: 8472, mac: '02:00:00:00:00:03', mtu: 1450 }),
      op.addMacvlan({ ns: undefined, name: 'eth0', parent: 'ens3', netns: '/proc/7/ns/net' }),
      op.setLink({ ns: '/proc/7/ns/net', dev: 'v0', master: 'cni0', alias: 'weft:a b', up: true, hairpin: true }),
      op.setLink({ ns: undefined, dev: 'v0', master: null, up: false }),
      op.addTun({ ns: undefined, name: 'flannel0', tolerate: 'exists' }),
      op.addDummy({ ns: '/run/netns/a', name: 'weft-dns', tolerate: 'exists' }),
    );
    assert.equal(
      p.render(),
      [
        'ip -n a link add name v0 mtu 1400 address 02:00:00:00:00:01 type veth peer name eth0 address 02:00:00:00:00:02 netns b',
        'ip link add name flannel.1 mtu 1450 address 02:00:00:00:00:03 type vxlan id 1 local 198.18.0.11 dev eth0 dstport 8472 nolearning',
        'ip link add link ens3 name eth0 netns /proc/7/ns/net type macvlan mode bridge',
        "nsenter --net=/proc/7/ns/net ip link set dev v0 master cni0 alias 'weft:a b' up",
        'nsenter --net=/proc/7/ns/net ip link set dev v0 type bridge_slave hairpin on',
        'ip link set dev v0 nomaster down',
        'ip tuntap add dev flannel0 mode tun',
        'ip -n a link add name weft-dns type dummy',
      ].join('\n'),
    );
  });

  it('addresses, routes, neighbours, fdb entries and sysctls', () => {
    const ns = '/run/netns/n1';
    const p = new Plan().add(
      op.replaceAddr({ ns, addr: '10.1.0.1/24', dev: 'cni0' }),
      op.delAddr({ ns, addr: '10.1.0.9/32', dev: 'cni0', tolerate: 'missing' }),
      op.replaceRoute({ ns, dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flannel.1', onlink: true }),
      op.addRoute({ ns, dst: 'default', via: '198.18.0.1' }),
      op.delRoute({ ns, dst: '10.244.3.0/24' }),
      op.replaceRoute({ ns, type: 'unreachable', dst: '10.244.1.0/24' }),
      op.setNeigh({ ns, dst: '10.244.2.0', mac: '02:00:00:00:00:02', dev: 'flannel.1' }),
      op.delNeigh({ ns, dst: '10.244.2.0', dev: 'flannel.1' }),
      op.replaceFdb({ ns, mac: '02:00:00:00:00:02', dev: 'flannel.1', dst: '198.18.0.12' }),
      op.delFdb({ ns, mac: '02:00:00:00:00:02', dev: 'flannel.1', dst: '198.18.0.12' }),
      op.setSysctl({ ns, key: 'net/ipv4/conf/flannel.1/accept_local', value: '1' }),
    );
    assert.equal(
      p.render(),
      [
        'ip -n n1 addr replace 10.1.0.1/24 dev cni0',
        'ip -n n1 addr del 10.1.0.9/32 dev cni0',
        'ip -n n1 route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
        'ip -n n1 route add default via 198.18.0.1',
        'ip -n n1 route del 10.244.3.0/24',
        'ip -n n1 route replace unreachable 10.244.1.0/24',
        'ip -n n1 neigh replace 10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent',
        'ip -n n1 neigh del 10.244.2.0 dev flannel.1',
        'bridge -n n1 fdb replace 02:00:00:00:00:02 dev flannel.1 dst 198.18.0.12 self permanent',
        'bridge -n n1 fdb del 02:00:00:00:00:02 dev flannel.1 dst 198.18.0.12 self',
        'nsenter --net=/run/netns/n1 sysctl -w net/ipv4/conf/flannel.1/accept_local=1',
      ].join('\n'),
    );
  });

  it('ops are plain data: tolerate and namespace are fields, undefined options are left out', () => {
    assert.deepEqual(op.delLink({ ns: undefined, dev: 'x', tolerate: 'missing' }), { op: 'delLink', dev: 'x', tolerate: 'missing' });
    assert.deepEqual(JSON.parse(JSON.stringify(op.addBridge({ ns: '/run/netns/a', name: 'br0' }))), {
      op: 'addLink',
      ns: '/run/netns/a',
      name: 'br0',
      link: { kind: 'bridge' },
    });
  });
});

describe('nft transactions', () => {
  it('render tables, base chains, rules, sets, verdict maps with concatenated keys, and elements', () => {
    const tx = nftTx('ip', 'kube-proxy')
      .add({ type: 'table', comment: 'rules for kube-proxy' })
      .add({ type: 'chain', name: 'nat-prerouting', chainType: 'nat', hook: 'prerouting', priority: 'dstnat', policy: 'accept' })
      .add({ type: 'chain', name: 'svc-x' })
      .add({ type: 'map', name: 'service-ips', key: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' })
      .add({ type: 'set', name: 'affinity', key: 'ipv4_addr', flags: ['dynamic', 'timeout'], timeout: '3h' })
      .add({ type: 'element', set: 'service-ips', key: ['10.96.0.1', 'tcp', '443'], value: 'goto svc-x' })
      .add({ type: 'element', set: 'service-ips', key: ['10.96.0.10', 'udp', '53'], value: 'goto svc-y' })
      .add({ type: 'rule', chain: 'nat-prerouting', rule: 'ip daddr . meta l4proto . th dport vmap @service-ips', comment: 'services' })
      .flush({ type: 'chain', name: 'svc-x' })
      .delete({ type: 'rule', chain: 'svc-x', handle: 12 })
      .insert({ type: 'rule', family: 'ip', table: 'filter', chain: 'FORWARD', rule: 'ip saddr 10.244.0.0/16 accept' })
      .delete({ type: 'element', set: 'service-ips', key: ['10.96.0.2', 'tcp', '80'] });
    assert.equal(
      renderTx(tx),
      [
        'add table ip kube-proxy { comment "rules for kube-proxy"; }',
        'add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }',
        'add chain ip kube-proxy svc-x',
        'add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }',
        'add set ip kube-proxy affinity { type ipv4_addr; flags dynamic, timeout; timeout 3h; }',
        'add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 443 : goto svc-x, 10.96.0.10 . udp . 53 : goto svc-y }',
        'add rule ip kube-proxy nat-prerouting ip daddr . meta l4proto . th dport vmap @service-ips comment "services"',
        'flush chain ip kube-proxy svc-x',
        'delete rule ip kube-proxy svc-x handle 12',
        'insert rule ip filter FORWARD ip saddr 10.244.0.0/16 accept',
        'delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }',
        '',
      ].join('\n'),
    );
  });

  it('refuses names and comments that would break the script', () => {
    assert.throws(() => renderTx(nftTx('ip', 'a b').add({ type: 'table' })), /table name "a b"/);
    assert.throws(() => renderTx(nftTx('ip', 't').add({ type: 'rule', chain: 'c', rule: 'accept', comment: 'x"; drop' })), /comment/);
    assert.throws(() => renderTx(nftTx('ip', 't').delete({ type: 'rule', chain: 'c' })), /handle/);
  });
});

describe('netlink message encoding', () => {
  it('writes the header, fixed part and aligned, nested attributes', () => {
    const w = new c.Writer(c.RTM_NEWLINK, c.NLM_F_CREATE | c.NLM_F_EXCL).ifinfo(c.AF_UNSPEC, 0);
    w.str(c.IFLA_IFNAME, 'abc');
    const info = w.begin(c.IFLA_LINKINFO);
    w.str(c.IFLA_INFO_KIND, 'vxlan');
    const data = w.begin(c.IFLA_INFO_DATA);
    w.u32(c.IFLA_VXLAN_ID, 42).u16be(c.IFLA_VXLAN_PORT, 8472).u8(c.IFLA_VXLAN_LEARNING, 0);
    w.end(data).end(info);
    const m = w.finish(7, c.NLM_F_ACK);
    assert.equal(m.readUInt32LE(0), m.length);
    assert.equal(m.readUInt16LE(4), c.RTM_NEWLINK);
    assert.equal(m.readUInt16LE(6), c.NLM_F_REQUEST | c.NLM_F_ACK | c.NLM_F_CREATE | c.NLM_F_EXCL);
    assert.equal(m.readUInt32LE(8), 7);
    assert.equal(m.length % 4, 0);
    const tb = c.parseAttrs(m, 32);
    assert.equal(c.cstr(tb.get(c.IFLA_IFNAME)!), 'abc');
    assert.equal(tb.get(c.IFLA_IFNAME)!.length, 4, 'NUL-terminated');
    const li = c.nested(tb.get(c.IFLA_LINKINFO));
    assert.equal(c.cstr(li.get(c.IFLA_INFO_KIND)!), 'vxlan');
    const vx = c.nested(li.get(c.IFLA_INFO_DATA));
    assert.equal(vx.get(c.IFLA_VXLAN_ID)!.readUInt32LE(0), 42);
    assert.equal(vx.get(c.IFLA_VXLAN_PORT)!.readUInt16BE(0), 8472, 'the port is big-endian');
    assert.deepEqual([...vx.get(c.IFLA_VXLAN_LEARNING)!], [0]);
  });

  it('converts addresses, prefixes and MACs both ways, IPv6 text through ip/cidr.ts', () => {
    assert.deepEqual([...c.ipBytes('10.244.1.2').bytes], [10, 244, 1, 2]);
    assert.equal(c.bytesIp(c.ipBytes('fd00::1:0:0:2').bytes), 'fd00::1:0:0:2');
    assert.equal(c.bytesIp(c.ipBytes('2001:db8:0:0:1:0:0:1').bytes), '2001:db8::1:0:0:1');
    assert.deepEqual(c.prefixBytes('default'), { family: c.AF_INET, bytes: Buffer.alloc(4), len: 0 });
    assert.equal(c.prefixBytes('10.0.0.0/8').len, 8);
    assert.throws(() => c.prefixBytes('10.0.0.0/33'), /prefix length/);
    assert.equal(c.bytesMac(c.macBytes('02:AB:00:00:00:0f')), '02:ab:00:00:00:0f');
    assert.throws(() => c.macBytes('02:ab'), /not a MAC/);
  });

  it('maps errnos to kinds', () => {
    assert.equal(errnoKind(17), 'exists');
    for (const e of [2, 3, 19, 99]) assert.equal(errnoKind(e), 'missing');
    assert.equal(errnoKind(16), 'busy');
    assert.equal(errnoKind(95), 'unsupported');
    assert.equal(errnoKind(1000), 'other');
  });
});
