import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deleteOldDnsTable, dnsDevicePlan } from './dns.js';
import { Plan } from '../kernel/plan.js';

describe('node-local DNS: the device as commands', () => {
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

  it("an earlier agent's table of its own is deleted whole", () => {
    assert.equal(
      new Plan().add(deleteOldDnsTable('/run/netns/n1')).render(),
      ["nsenter --net=/run/netns/n1 nft -f - <<'EOF'", 'delete table ip weft-dns', 'EOF'].join('\n'),
    );
  });
});
