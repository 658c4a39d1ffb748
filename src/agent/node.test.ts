import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NodeInfo } from '../backend/types.js';
import { parseCidr } from '../ip/cidr.js';
import { parseNetworkConfig } from '../subnet/config.js';
import { AgentError, checkNetworkForNode } from './node.js';

const node = (publicIP: string, ifaceNet: string): NodeInfo => ({ name: 'n1', iface: 'eth0', ifaceMtu: 1500, publicIP, ifaceNets: [parseCidr(ifaceNet)] });
const config = (network: string) => parseNetworkConfig(JSON.stringify({ Network: network, Backend: { Type: 'vxlan' } }));

describe('checkNetworkForNode', () => {
  it('refuses a Network that contains the PublicIP or an address of the underlay interface, saying which', () => {
    assert.throws(
      () => checkNetworkForNode(config('10.0.0.0/8'), node('10.1.2.3', '10.1.2.3/24')),
      (e: unknown) => e instanceof AgentError && e.code === 'bad-network' && /Network 10\.0\.0\.0\/8 contains this node's PublicIP 10\.1\.2\.3/.test(e.message),
    );
    // Behind NAT: the PublicIP is outside, the interface's own address is inside.
    assert.throws(() => checkNetworkForNode(config('10.0.0.0/8'), node('203.0.113.7', '10.1.2.3/24')), /contains this node's address 10\.1\.2\.3 on eth0/);
  });

  it('accepts a Network that holds no address of the node', () => {
    checkNetworkForNode(config('10.244.0.0/16'), node('198.18.0.11', '198.18.0.11/24'));
  });
});
