import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dnsDevicePlan, dnsTablePlan, notrackRules } from './dns.js';

describe('node-local DNS: the device and the notrack table as commands', () => {
  it('the device gets the cluster DNS IP as a /32 and is up; a wrong address is removed', () => {
    assert.equal(
      dnsDevicePlan('/run/netns/n1', '10.96.0.10', { addrs: [] }).render(),
      ['ip -n n1 addr replace 10.96.0.10/32 dev weft-dns', 'ip -n n1 link set dev weft-dns up'].join('\n'),
    );
    assert.equal(
      dnsDevicePlan(undefined, '10.96.0.10', { addrs: ['10.96.0.53', '10.96.0.10'] }).render(),
      ['ip addr del 10.96.0.53/32 dev weft-dns', 'ip link set dev weft-dns up'].join('\n'),
    );
  });

  it('DNS to and from the IP is untracked before conntrack and the nat hooks (raw priority), in one transaction', () => {
    assert.equal(
      dnsTablePlan(undefined, '10.96.0.10').render(),
      [
        "nft -f - <<'EOF'",
        'add table ip weft-dns { comment "weft node-local DNS: no conntrack, no DNAT"; }',
        'flush table ip weft-dns',
        'add chain ip weft-dns prerouting { type filter hook prerouting priority raw; }',
        'add chain ip weft-dns output { type filter hook output priority raw; }',
        'add rule ip weft-dns prerouting ip daddr 10.96.0.10 meta l4proto { tcp, udp } th dport 53 notrack comment "node-local DNS 10.96.0.10"',
        'add rule ip weft-dns output ip daddr 10.96.0.10 meta l4proto { tcp, udp } th dport 53 notrack comment "node-local DNS 10.96.0.10"',
        'add rule ip weft-dns output ip saddr 10.96.0.10 meta l4proto { tcp, udp } th sport 53 notrack comment "node-local DNS 10.96.0.10"',
        'EOF',
      ].join('\n'),
    );
    assert.deepEqual(
      notrackRules('10.96.0.10').map((r) => r.chain),
      ['prerouting', 'output', 'output'],
    );
  });
});
