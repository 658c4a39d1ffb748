import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AddressError,
  contains,
  formatAddr,
  formatCidr,
  formatNetwork,
  lastAddr,
  mask,
  nthSubnet,
  overlaps,
  parseAddr,
  parseCidr,
  subnetCount,
} from './cidr.js';

const v4 = (s: string) => parseAddr(s).value;

describe('cidr: addresses', () => {
  it('parses and formats IPv4', () => {
    assert.deepEqual(parseAddr('10.244.3.7'), { family: 4, value: 0x0af40307n });
    assert.deepEqual(parseAddr('0.0.0.0'), { family: 4, value: 0n });
    assert.deepEqual(parseAddr('255.255.255.255'), { family: 4, value: 0xffffffffn });
    for (const s of ['10.244.3.7', '0.0.0.0', '255.255.255.255', '192.168.0.1']) assert.equal(formatAddr(parseAddr(s)), s);
  });

  it('parses IPv6 in all its spellings', () => {
    assert.deepEqual(parseAddr('::'), { family: 6, value: 0n });
    assert.deepEqual(parseAddr('::1'), { family: 6, value: 1n });
    assert.equal(parseAddr('fd00::1').value, (0xfd00n << 112n) | 1n);
    assert.equal(parseAddr('2001:db8:0:0:1:0:0:1').value, parseAddr('2001:db8::1:0:0:1').value);
    assert.equal(parseAddr('::ffff:10.0.0.1').value, (0xffffn << 32n) | v4('10.0.0.1'));
    assert.equal(parseAddr('1:2:3:4:5:6:7:8').value, 0x00010002000300040005000600070008n);
    assert.equal(parseAddr('FD00::ABCD').value, parseAddr('fd00::abcd').value);
  });

  it('formats IPv6 canonically (RFC 5952)', () => {
    const round = (s: string) => formatAddr(parseAddr(s));
    assert.equal(round('0:0:0:0:0:0:0:0'), '::');
    assert.equal(round('0:0:0:0:0:0:0:1'), '::1');
    assert.equal(round('fd00:0:0:0:0:0:0:1'), 'fd00::1');
    assert.equal(round('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'the first of two equal zero runs is compressed');
    assert.equal(round('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1', 'a single zero word is not compressed');
    assert.equal(round('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1', 'the longest zero run is compressed');
    assert.equal(round('FD00::ABCD'), 'fd00::abcd');
    assert.equal(round('1:0:0:0:0:0:0:0'), '1::');
  });

  it('rejects what is not an address', () => {
    for (const bad of ['', '10.0.0', '10.0.0.256', '1.2.3.4.5', 'fd00:::1', 'abc', '10.0.0.1/24', ' 10.0.0.1']) {
      assert.throws(() => parseAddr(bad), AddressError, bad);
    }
  });
});

describe('cidr: prefixes', () => {
  it('parses IPv4 CIDRs, keeping the host bits apart from the base', () => {
    const c = parseCidr('10.244.1.7/24');
    assert.deepEqual(c, { family: 4, ip: v4('10.244.1.7'), base: v4('10.244.1.0'), prefix: 24 });
    assert.equal(formatNetwork(c), '10.244.1.0/24');
    assert.equal(formatCidr(c), '10.244.1.7/24');
    assert.equal(formatNetwork(parseCidr('0.0.0.0/0')), '0.0.0.0/0');
    assert.equal(formatNetwork(parseCidr('10.1.2.3/32')), '10.1.2.3/32');
    assert.equal(formatNetwork(parseCidr('10.255.255.255/9')), '10.128.0.0/9');
  });

  it('parses IPv6 CIDRs', () => {
    const c = parseCidr('fd00:10:244:1::7/64');
    assert.equal(c.family, 6);
    assert.equal(c.prefix, 64);
    assert.equal(formatNetwork(c), 'fd00:10:244:1::/64');
    assert.equal(formatCidr(c), 'fd00:10:244:1::7/64');
    assert.equal(formatNetwork(parseCidr('::/0')), '::/0');
    assert.equal(formatNetwork(parseCidr('fd00::1/128')), 'fd00::1/128');
  });

  it('rejects bad CIDRs', () => {
    for (const bad of [
      '10.0.0.0',
      '10.0.0.0/',
      '10.0.0.0/33',
      '10.0.0.0/-1',
      '10.0.0.0/a',
      '10.0.0.0/24/1',
      'fd00::/129',
      '10.0.0/8',
      '/24',
      '10.0.0.0/1234',
    ]) {
      assert.throws(() => parseCidr(bad), AddressError, bad);
    }
  });

  it('computes masks and last addresses', () => {
    assert.equal(mask(4, 0), 0n);
    assert.equal(mask(4, 24), 0xffffff00n);
    assert.equal(mask(4, 32), 0xffffffffn);
    assert.equal(mask(6, 64), ((1n << 64n) - 1n) << 64n);
    assert.equal(formatAddr({ family: 4, value: lastAddr(parseCidr('10.244.1.0/24')) }), '10.244.1.255');
    assert.equal(formatAddr({ family: 4, value: lastAddr(parseCidr('10.244.0.0/16')) }), '10.244.255.255');
    assert.equal(formatAddr({ family: 6, value: lastAddr(parseCidr('fd00::/120')) }), 'fd00::ff');
  });

  it('contains: same family, inside the prefix', () => {
    const net = parseCidr('10.244.0.0/16');
    assert.ok(contains(net, parseAddr('10.244.0.0')));
    assert.ok(contains(net, parseAddr('10.244.255.255')));
    assert.ok(!contains(net, parseAddr('10.245.0.0')));
    assert.ok(!contains(net, parseAddr('10.243.255.255')));
    assert.ok(contains(parseCidr('0.0.0.0/0'), parseAddr('1.2.3.4')));
    assert.ok(!contains(parseCidr('0.0.0.0/0'), parseAddr('::1')), 'an IPv6 address is in no IPv4 prefix');
    assert.ok(contains(parseCidr('fd00::/64'), parseAddr('fd00::ffff')));
    assert.ok(!contains(parseCidr('fd00::/64'), parseAddr('fd00:0:0:1::')));
    assert.ok(!contains(parseCidr('::/0'), parseAddr('10.0.0.1')));
  });

  it('overlaps: either holds the other', () => {
    const o = (a: string, b: string) => overlaps(parseCidr(a), parseCidr(b));
    assert.ok(o('10.244.0.0/16', '10.244.3.0/24'));
    assert.ok(o('10.244.3.0/24', '10.244.0.0/16'));
    assert.ok(o('10.244.3.0/24', '10.244.3.128/25'));
    assert.ok(o('10.0.0.0/8', '10.0.0.0/8'));
    assert.ok(o('0.0.0.0/0', '192.168.1.0/24'));
    assert.ok(!o('10.244.3.0/24', '10.244.4.0/24'));
    assert.ok(!o('10.244.0.0/16', '10.245.0.0/16'));
    assert.ok(!o('10.244.3.0/25', '10.244.3.128/25'));
    assert.ok(!o('10.0.0.0/8', 'fd00::/8'), 'different families never overlap');
    assert.ok(o('fd00::/48', 'fd00:0:0:1::/64'));
    assert.ok(!o('fd00::/64', 'fd00:0:0:1::/64'));
  });

  it('nthSubnet and subnetCount walk the subnets in order', () => {
    const net = parseCidr('10.244.0.0/16');
    assert.equal(subnetCount(net, 24), 256n);
    assert.equal(subnetCount(net, 16), 1n);
    assert.equal(formatNetwork(nthSubnet(net, 24, 0n)), '10.244.0.0/24');
    assert.equal(formatNetwork(nthSubnet(net, 24, 3n)), '10.244.3.0/24');
    assert.equal(formatNetwork(nthSubnet(net, 24, 255n)), '10.244.255.0/24');
    assert.equal(formatNetwork(nthSubnet(net, 26, 5n)), '10.244.1.64/26');
    const s = nthSubnet(net, 24, 7n);
    assert.equal(s.ip, s.base, 'a subnet carries no host bits');
    assert.equal(formatNetwork(nthSubnet(parseCidr('10.244.9.9/16'), 24, 1n)), '10.244.1.0/24', 'the host bits of the network are ignored');
    const v6 = parseCidr('fd00:10::/48');
    assert.equal(subnetCount(v6, 64), 65536n);
    assert.equal(formatNetwork(nthSubnet(v6, 64, 0x1234n)), 'fd00:10:0:1234::/64');
  });
});
