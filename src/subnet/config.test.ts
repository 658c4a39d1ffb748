import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatNetwork } from '../ip/cidr.js';
import { NetworkConfigError, parseNetworkConfig } from './config.js';

function summary(json: object) {
  const c = parseNetworkConfig(JSON.stringify(json));
  return { network: formatNetwork(c.network), subnetLen: c.subnetLen, min: formatNetwork(c.subnetMin), max: formatNetwork(c.subnetMax) };
}

function rejects(json: object | string, field: string, pattern: RegExp): void {
  const text = typeof json === 'string' ? json : JSON.stringify(json);
  assert.throws(
    () => parseNetworkConfig(text),
    (err: unknown) => {
      assert.ok(err instanceof NetworkConfigError, `expected NetworkConfigError, got ${String(err)}`);
      assert.equal(err.field, field);
      assert.equal(err.code, 'invalid-network-config');
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('network config defaults (as flannel)', () => {
  it('gives each node a /24 of a /16 and skips the first subnet', () => {
    assert.deepEqual(summary({ Network: '10.244.0.0/16' }), {
      network: '10.244.0.0/16',
      subnetLen: 24,
      min: '10.244.1.0/24',
      max: '10.244.255.0/24',
    });
  });

  it('keeps /24 down to a /22 network', () => {
    assert.deepEqual(summary({ Network: '10.1.0.0/22' }), { network: '10.1.0.0/22', subnetLen: 24, min: '10.1.1.0/24', max: '10.1.3.0/24' });
  });

  it('splits networks smaller than /22 into four', () => {
    assert.equal(summary({ Network: '10.1.0.0/23' }).subnetLen, 25);
    assert.deepEqual(summary({ Network: '192.168.5.0/28' }), {
      network: '192.168.5.0/28',
      subnetLen: 30,
      min: '192.168.5.4/30',
      max: '192.168.5.12/30',
    });
  });

  it('treats SubnetLen 0 as unset, as flannel does', () => {
    assert.equal(summary({ Network: '10.244.0.0/16', SubnetLen: 0 }).subnetLen, 24);
  });

  it('derives SubnetMin and SubnetMax from an explicit SubnetLen', () => {
    assert.deepEqual(summary({ Network: '10.244.0.0/16', SubnetLen: 26 }), {
      network: '10.244.0.0/16',
      subnetLen: 26,
      min: '10.244.0.64/26',
      max: '10.244.255.192/26',
    });
  });

  it('accepts explicit bounds', () => {
    assert.deepEqual(summary({ Network: '10.244.0.0/16', SubnetMin: '10.244.10.0', SubnetMax: '10.244.20.0' }), {
      network: '10.244.0.0/16',
      subnetLen: 24,
      min: '10.244.10.0/24',
      max: '10.244.20.0/24',
    });
  });

  it('uses udp when no backend is named, with its default port', () => {
    assert.deepEqual(parseNetworkConfig('{"Network":"10.244.0.0/16"}').backend, { type: 'udp', port: 8285 });
  });

  it('fills in vxlan VNI 1 and port 8472', () => {
    const c = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
    assert.deepEqual(c.backend, { type: 'vxlan', vni: 1, port: 8472, directRouting: false });
  });

  it('keeps explicit backend options', () => {
    const vxlan = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":42,"Port":4789,"DirectRouting":true,"MTU":1400,"GBP":false}}');
    assert.deepEqual(vxlan.backend, { type: 'vxlan', vni: 42, port: 4789, directRouting: true, mtu: 1400 });
    assert.deepEqual(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}').backend, { type: 'host-gw' });
    assert.deepEqual(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":9000}}').backend, {
      type: 'udp',
      port: 9000,
    });
  });

  it('accepts EnableIPv4 true and EnableIPv6 false', () => {
    assert.equal(summary({ Network: '10.244.0.0/16', EnableIPv4: true, EnableIPv6: false }).subnetLen, 24);
  });
});

describe('network config errors name the field and the fix', () => {
  it('rejects documents that are not JSON objects', () => {
    rejects('{"Network": ', '', /not valid JSON/);
    rejects('[]', '', /must be a JSON object/);
  });

  it('rejects a missing, malformed, IPv6 or unaligned Network', () => {
    rejects({}, 'Network', /Network is missing/);
    rejects({ Network: 16 }, 'Network', /must be a string/);
    rejects({ Network: '10.244.0.0' }, 'Network', /ADDRESS\/PREFIX/);
    rejects({ Network: 'fd00::/48' }, 'Network', /IPv4 only/);
    rejects({ Network: '10.244.1.0/16' }, 'Network', /did you mean "10\.244\.0\.0\/16"/);
  });

  it('rejects a Network that is everything, loopback, link-local or multicast, saying which', () => {
    rejects({ Network: '0.0.0.0/0' }, 'Network', /Network 0\.0\.0\.0\/0 is every address/);
    rejects({ Network: '127.0.0.0/16' }, 'Network', /overlaps the loopback range 127\.0\.0\.0\/8/);
    rejects({ Network: '96.0.0.0/3' }, 'Network', /overlaps the loopback range/);
    rejects({ Network: '169.254.0.0/16' }, 'Network', /overlaps the link-local range 169\.254\.0\.0\/16/);
    rejects({ Network: '224.1.0.0/16' }, 'Network', /overlaps the multicast range 224\.0\.0\.0\/4/);
    rejects({ Network: '239.255.0.0/16' }, 'Network', /multicast/);
    for (const ok of ['10.244.0.0/16', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10']) assert.equal(summary({ Network: ok }).network, ok);
  });

  it('rejects networks too small for four subnets', () => {
    rejects({ Network: '10.0.0.0/29' }, 'Network', /\/28 or larger/);
  });

  it('rejects bad SubnetLen values', () => {
    rejects({ Network: '10.244.0.0/16', SubnetLen: 31 }, 'SubnetLen', /30 or less/);
    rejects({ Network: '10.244.0.0/16', SubnetLen: 17 }, 'SubnetLen', /use 18 or more/);
    rejects({ Network: '10.244.0.0/16', SubnetLen: '24' }, 'SubnetLen', /whole number/);
    rejects({ Network: '10.244.0.0/16', SubnetLen: 24.5 }, 'SubnetLen', /whole number/);
  });

  it('rejects bounds that are outside, unaligned, malformed or reversed', () => {
    rejects({ Network: '10.244.0.0/16', SubnetMin: '10.245.0.0' }, 'SubnetMin', /outside Network 10\.244\.0\.0\/16/);
    rejects({ Network: '10.244.0.0/16', SubnetMax: '10.244.7.5' }, 'SubnetMax', /use 10\.244\.7\.0/);
    rejects({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0/24' }, 'SubnetMin', /not an IPv4 address/);
    rejects({ Network: '10.244.0.0/16', SubnetMin: 5 }, 'SubnetMin', /must be a string/);
    rejects({ Network: '10.244.0.0/16', SubnetMin: '10.244.9.0', SubnetMax: '10.244.3.0' }, 'SubnetMin', /above SubnetMax/);
  });

  it('rejects IPv6 settings as unsupported', () => {
    rejects({ Network: '10.244.0.0/16', EnableIPv6: true }, 'EnableIPv6', /not supported/);
    rejects({ Network: '10.244.0.0/16', IPv6Network: 'fd00::/48' }, 'IPv6Network', /IPv4 only; remove it/);
    rejects({ Network: '10.244.0.0/16', EnableIPv4: false }, 'EnableIPv4', /not supported/);
    rejects({ Network: '10.244.0.0/16', EnableIPv6: 'yes' }, 'EnableIPv6', /true or false/);
  });

  it('rejects unknown fields, catching typos', () => {
    rejects({ Network: '10.244.0.0/16', SubnetLength: 24 }, 'SubnetLength', /unknown field SubnetLength.*case-sensitive/);
  });

  it('rejects bad backends', () => {
    rejects({ Network: '10.244.0.0/16', Backend: 'vxlan' }, 'Backend', /must be an object/);
    rejects({ Network: '10.244.0.0/16', Backend: {} }, 'Backend.Type', /missing/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'wireguard' } }, 'Backend.Type', /"vxlan", "host-gw" or "udp"/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw', VNI: 1 } }, 'Backend.VNI', /does not apply to the host-gw backend/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 1 << 24 } }, 'Backend.VNI', /0 to 16777215/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'udp', Port: 0 } }, 'Backend.Port', /1 to 65535/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', MTU: 20 } }, 'Backend.MTU', /68 to 65535/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', DirectRouting: 1 } }, 'Backend.DirectRouting', /true or false/);
    rejects({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', GBP: true } }, 'Backend.GBP', /not supported/);
  });
});
