import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTrace, vxlanVni } from './events.js';

// Lines as nft 1.0.6 (`nft -a monitor`) printed them in a lab.
const LINES = [
  'trace id 030ab641 ip weft-trace-40124 prerouting packet: iif "flannel.1" ether saddr 02:23:2b:1b:f7:45 ether daddr 4a:9f:c2:f5:b4:77 ip saddr 10.244.249.2 ip daddr 10.244.240.2 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 55287 ip length 60 tcp sport 40124 tcp dport 80 tcp flags == syn tcp window 64860 ',
  'trace id 030ab641 ip weft-trace-40124 prerouting rule tcp sport 40124 meta nftrace set 1 # handle 3 (verdict continue)',
  'trace id 030ab641 ip weft-trace-40124 prerouting policy accept ',
  'add chain ip weft-trace-40124 done',
  'trace id 5a5a5a5a ip weft-proxy filter-forward packet: iif "flannel.1" oif "cni0" ip saddr 10.244.249.2 ip daddr 10.244.240.2 ip id 55287 tcp sport 40124 tcp dport 80 tcp flags == syn ',
  'trace id 5a5a5a5a ip weft-proxy filter-forward rule ct state new jump endpoints-check comment "base:29f183ae:0" # handle 11 (verdict jump endpoints-check)',
  'trace id 030ab641 ip handmade forward packet: iif "flannel.1" oif "cni0" ip saddr 10.244.249.2 ip daddr 10.244.240.2 ip ttl 62 ip id 55287 ip length 60 tcp sport 40124 tcp dport 80 tcp flags == syn ',
  'trace id 5a5a5a5a ip weft-proxy filter-forward policy accept ',
  'trace id 030ab641 ip handmade forward rule ip daddr 10.244.240.2 tcp dport 80 drop comment "hand" # handle 14 (verdict drop)',
  'trace id 86c472e0 ip weft-trace-40124 output packet: oif "eth0" @ll,0,160 0x4a9fc2f5b47702232b1bf74508004500003cd7f7 ip saddr 198.18.0.11 ip daddr 198.18.0.12 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 26687 ip length 110 udp sport 34181 udp dport 8472 udp length 90 @th,64,96 0x8000000000001004a9fc2f5 ',
  'trace id 11111111 ip weft-trace-21036 output packet: oif "eth0" ip saddr 198.18.0.1 ip daddr 198.18.0.12 ip id 4242 icmp type echo-request icmp code net-unreachable icmp id 21036 icmp sequence 1 ',
];

describe('trace events', () => {
  const records = parseTrace(LINES);

  it('one record per base-chain pass; rules and policy join the latest record of their trace id, even interleaved', () => {
    assert.deepEqual(
      records.map((r) => `${r.family} ${r.table} ${r.chain}`),
      ['ip weft-trace-40124 prerouting', 'ip weft-proxy filter-forward', 'ip handmade forward', 'ip weft-trace-40124 output', 'ip weft-trace-21036 output'],
    );
    assert.equal(records[0]!.policy, 'accept');
    assert.deepEqual(records[1]!.rules, [
      { chain: 'filter-forward', text: 'ct state new jump endpoints-check comment "base:29f183ae:0"', handle: 11, verdict: 'jump endpoints-check' },
    ]);
    assert.equal(records[1]!.policy, 'accept');
    assert.deepEqual(records[2]!.rules, [{ chain: 'forward', text: 'ip daddr 10.244.240.2 tcp dport 80 drop comment "hand"', handle: 14, verdict: 'drop' }]);
  });

  it('packet fields: devices, addresses, the IPv4 id, ports and flags, ICMP id', () => {
    assert.deepEqual(records[0]!.packet, {
      iif: 'flannel.1',
      saddr: '10.244.249.2',
      daddr: '10.244.240.2',
      ipId: 55287,
      ttl: 63,
      proto: 'tcp',
      sport: 40124,
      dport: 80,
      tcpFlags: 'syn',
    });
    assert.deepEqual(records[4]!.packet, {
      oif: 'eth0',
      saddr: '198.18.0.1',
      daddr: '198.18.0.12',
      ipId: 4242,
      proto: 'icmp',
      icmpType: 'echo-request',
      icmpId: 21036,
    });
  });

  it('the VNI from the raw VXLAN header nft prints (leading zeros dropped)', () => {
    const outer = records[3]!.packet;
    assert.equal(outer.proto, 'udp');
    assert.equal(outer.dport, 8472);
    assert.equal(vxlanVni(outer.udpPayload), 1);
    assert.equal(vxlanVni('8000000000fa000aabbccdd'), 4000);
  });
});
