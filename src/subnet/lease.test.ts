import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { parseNetworkConfig } from './config.js';
import { isLeasable, pickFreeSubnet } from './allocate.js';
import { decodeLeaseAttrs, encodeLeaseAttrs, LeaseError, parseSubnetKey, subnetKey } from './lease.js';

const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const small = parseNetworkConfig('{"Network":"10.9.0.0/22","SubnetMin":"10.9.1.0","SubnetMax":"10.9.3.0"}');

describe('subnet keys', () => {
  it('uses flannel names', () => {
    assert.equal(subnetKey(parseCidr('10.244.3.0/24')), 'subnets/10.244.3.0-24');
    assert.equal(subnetKey(parseCidr('10.244.3.1/24')), 'subnets/10.244.3.0-24');
    assert.equal(formatNetwork(parseSubnetKey('subnets/10.244.3.0-24')!), '10.244.3.0/24');
  });

  it('ignores keys that name no IPv4 subnet', () => {
    for (const key of [
      'config',
      'subnets/10.244.3.1-24',
      'subnets/10.244.3.0-33',
      'subnets/10.244.3.0-24&fd00::-64',
      'subnets/300.1.1.0-24',
      'x/10.244.3.0-24',
    ]) {
      assert.equal(parseSubnetKey(key), undefined, key);
    }
  });
});

describe('lease values', () => {
  it('encodes exactly as flanneld', () => {
    assert.equal(
      encodeLeaseAttrs({ publicIP: '198.18.0.12', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:ff' } }),
      '{"PublicIP":"198.18.0.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
    );
    assert.equal(encodeLeaseAttrs({ publicIP: '198.18.0.12' }), '{"PublicIP":"198.18.0.12","PublicIPv6":null}');
  });

  it('decodes flanneld values and rejects garbage', () => {
    assert.deepEqual(decodeLeaseAttrs('{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"host-gw"}'), {
      publicIP: '198.18.0.11',
      backendType: 'host-gw',
    });
    assert.deepEqual(decodeLeaseAttrs('{"PublicIP":"198.18.0.11","BackendData":{"VNI":1}}'), { publicIP: '198.18.0.11', backendData: { VNI: 1 } });
    for (const bad of ['', 'null', '{"PublicIP":"nope"}', '{"PublicIP":"198.18.0.11","BackendType":7}', '{}']) {
      assert.equal(decodeLeaseAttrs(bad), undefined, bad);
    }
  });
});

describe('isLeasable', () => {
  it('accepts only subnets of the right length inside [SubnetMin, SubnetMax]', () => {
    assert.equal(isLeasable(config, parseCidr('10.244.1.0/24')), true);
    assert.equal(isLeasable(config, parseCidr('10.244.255.0/24')), true);
    assert.equal(isLeasable(config, parseCidr('10.244.0.0/24')), false);
    assert.equal(isLeasable(config, parseCidr('10.244.4.0/25')), false);
    assert.equal(isLeasable(config, parseCidr('10.245.4.0/24')), false);
  });
});

describe('pickFreeSubnet', () => {
  it('stays inside [SubnetMin, SubnetMax] and reaches every free subnet', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(formatNetwork(pickFreeSubnet(small, [])));
    assert.deepEqual([...seen].sort(), ['10.9.1.0/24', '10.9.2.0/24', '10.9.3.0/24']);
  });

  it('never picks a taken subnet', () => {
    const taken = ['10.244.1.0/24', '10.244.3.0/24', '10.244.200.0/24'].map(parseCidr);
    for (let i = 0; i < 500; i++) {
      const picked = pickFreeSubnet(config, taken);
      assert.ok(isLeasable(config, picked));
      assert.ok(!taken.some((t) => t.base === picked.base), formatNetwork(picked));
    }
  });

  it('finds the last free subnet', () => {
    for (let i = 0; i < 20; i++) {
      assert.equal(formatNetwork(pickFreeSubnet(small, [parseCidr('10.9.1.0/24'), parseCidr('10.9.3.0/24')])), '10.9.2.0/24');
    }
  });

  it('counts leases of other sizes by overlap and ignores leases outside the network', () => {
    const taken = [parseCidr('10.9.0.0/23'), parseCidr('10.9.3.128/25'), parseCidr('192.168.0.0/16')];
    for (let i = 0; i < 20; i++) assert.equal(formatNetwork(pickFreeSubnet(small, taken)), '10.9.2.0/24');
  });

  it('reports exhaustion with what to do', () => {
    assert.throws(
      () => pickFreeSubnet(small, [parseCidr('10.9.0.0/22')]),
      (err: unknown) =>
        err instanceof LeaseError &&
        err.code === 'out-of-subnets' &&
        /all 3 \/24 subnets from 10\.9\.1\.0\/24 to 10\.9\.3\.0\/24 are leased; delete leases/.test(err.message),
    );
  });
});
