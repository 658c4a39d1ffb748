import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as packet from 'dns-packet';
import { resolvConfText } from './resolv.js';
import { upstreamAnswer } from './upstream.js';

describe('lab DNS pieces', () => {
  it("a pod's resolv.conf is the CNI result's dns, line by line", () => {
    assert.equal(
      resolvConfText({ nameservers: ['10.96.0.10'], search: ['team-a.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], options: ['ndots:5'] }),
      'nameserver 10.96.0.10\nsearch team-a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n',
    );
  });

  it("the outside world's resolver: its names, NXDOMAIN with the SOA for others, NODATA for AAAA, garbage dropped", () => {
    const ask = (name: string, type: 'A' | 'AAAA' = 'A') =>
      packet.decode(upstreamAnswer(packet.encode({ type: 'query', id: 7, flags: packet.RECURSION_DESIRED, questions: [{ type, name }] }))!);
    const a = ask('Example.Test');
    assert.equal(a.id, 7);
    assert.equal((a as { rcode?: string }).rcode, 'NOERROR');
    assert.deepEqual(
      a.answers?.map((x) => [x.type, x.name, (x as { data: string }).data]),
      [['A', 'Example.Test', '203.0.113.1']],
    );
    const nx = ask('nothing.example.test');
    assert.equal((nx as { rcode?: string }).rcode, 'NXDOMAIN');
    assert.equal(nx.authorities?.[0]?.type, 'SOA');
    const nodata = ask('example.test', 'AAAA');
    assert.equal((nodata as { rcode?: string }).rcode, 'NOERROR');
    assert.deepEqual(nodata.answers, []);
    assert.equal(upstreamAnswer(Buffer.from([1, 2, 3])), undefined);
  });
});
