import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BARS, formatDatapathReport, type DatapathReport, type DatapathRow } from './datapath.js';
import { referencePlan, refNames } from './reference.js';

const row = (o: Partial<DatapathRow> & Pick<DatapathRow, 'backend'>): DatapathRow => ({
  mode: 'bridge',
  rawGbps: 10,
  refGbps: 8,
  podGbps: 7.6,
  ratio: 0.76,
  vsRef: 0.95,
  rawRttMs: 0.1,
  refRttMs: 0.12,
  podRttMs: 0.13,
  ...o,
});

describe('bench datapath report', () => {
  it('bars vxlan and host-gw against the reference, udp by its throughput', () => {
    assert.equal(BARS.vxlan.met(row({ backend: 'vxlan', vsRef: 0.95 })), true);
    assert.equal(BARS.vxlan.met(row({ backend: 'vxlan', vsRef: 0.94 })), false);
    assert.equal(BARS['host-gw'].met(row({ backend: 'host-gw', vsRef: undefined })), false);
    assert.equal(BARS.udp.met(row({ backend: 'udp', podGbps: 1.2, vsRef: undefined })), true);
  });

  it('prints raw, reference, Weft and their ratios per backend and mode; udp has no reference', () => {
    const rows = [
      row({ backend: 'vxlan' }),
      row({ backend: 'vxlan', mode: 'routed', podGbps: 8, vsRef: 1, ratio: 0.8 }),
      row({ backend: 'udp', refGbps: undefined, vsRef: undefined, refRttMs: undefined, podGbps: 3.8, ratio: 0.38 }),
    ];
    const r: DatapathReport = { bench: 'datapath', seconds: 5, rounds: 3, rows, ok: true, problems: [], bars: [] };
    const lines = formatDatapathReport(r).split('\n');
    assert.match(lines[1]!, /backend +mode +raw Gbit\/s +ref Gbit\/s +Weft Gbit\/s +Weft\/ref +Weft\/raw +Weft\/vxlan/);
    assert.match(lines[3]!, /^vxlan +bridge +10\.0 +8\.00 +7\.60 +0\.95 +0\.76 +1\.00 +0\.95 of reference +yes/);
    assert.match(lines[4]!, /^vxlan +routed .* 1\.00 +0\.80 +1\.05 /);
    assert.match(lines[5]!, /^udp +bridge +10\.0 +- +3\.80 +- +0\.38 +0\.50 +1 Gbit\/s +yes .* 0\.10 +- +0\.13$/);
  });
});

describe('the hand-built reference', () => {
  const names = refNames({ name: (s: string) => `wt00000000-${s}` }, 'vxlan');

  it('vxlan: flannel.1 with its onlink route, permanent neighbour and fdb entry toward the other node', () => {
    const text = referencePlan(names, 'vxlan', 1450).render();
    const n1 = 'ip -n wt00000000-rvx-n1';
    for (const line of [
      `${n1} link add name flannel.1 mtu 1450 address 0e:77:65:66:00:01 type vxlan id 1 local 198.18.0.11 dev eth0 dstport 8472 nolearning`,
      `${n1} route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink`,
      `${n1} neigh replace 10.244.2.0 lladdr 0e:77:65:66:00:02 dev flannel.1 nud permanent`,
      'bridge -n wt00000000-rvx-n1 fdb add 0e:77:65:66:00:02 dev flannel.1 dst 198.18.0.12 self permanent',
      `${n1} link add name veth1 mtu 1450 type veth peer name eth0 mtu 1450 netns wt00000000-rvx-p1`,
      'ip -n wt00000000-rvx-p1 route add default via 10.244.1.1',
    ])
      assert.ok(text.split('\n').includes(line), line);
    assert.doesNotMatch(text, /nft/);
  });

  it('host-gw: a route via the other node on the underlay, no vxlan device', () => {
    const text = referencePlan(refNames({ name: (s: string) => `wt00000000-${s}` }, 'host-gw'), 'host-gw', 1500).render();
    assert.ok(text.includes('ip -n wt00000000-rgw-n2 route add 10.244.1.0/24 via 198.18.0.11 dev eth0'));
    assert.doesNotMatch(text, /vxlan|nft/);
  });
});
