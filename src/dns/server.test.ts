import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { decode, type Packet } from 'dns-packet';
import { TinyUpstream } from '../testing/dns-upstream.js';
import { askTcp, askUdp, FakeRegistry, query } from '../testing/dns.js';
import { ClusterDns } from './server.js';

const reg = new FakeRegistry();
let dns: ClusterDns;
let port: number;
const upstream = new TinyUpstream({
  'example.test': [{ name: 'example.test', type: 'A', ttl: 30, data: '203.0.113.1' }],
  'short.test': [{ name: 'short.test', type: 'A', ttl: 1, data: '203.0.113.2' }],
  'big.test': Array.from({ length: 30 }, (_, i) => ({ name: 'big.test', type: 'TXT', ttl: 30, data: `${i}`.padEnd(100, 'x') })),
});

// A generous timeout: on a loaded machine the 20,000-message fuzz keeps the event loop busy for seconds.
const ask = (name: string, type: Parameters<typeof query>[1], edns?: number) =>
  askUdp('127.0.0.1', port, query(name, type, edns === undefined ? {} : { edns }), 10_000);
const data = (p: Packet) => (p.answers ?? []).map((a) => `${a.type} ${JSON.stringify((a as { data: unknown }).data)}`).sort();
const ttl = (p: Packet) => (p.answers![0] as { ttl: number }).ttl;
const rcode = (p: Packet) => (p as { rcode?: string }).rcode;
const Z = 'cluster.local';

before(async () => {
  await upstream.start();
  reg.service({ name: 'web', clusterIP: '10.96.0.20', ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }], selector: { app: 'web' } });
  reg.service({ name: 'db', clusterIP: 'None', ports: [{ name: 'pg', protocol: 'TCP', port: 5432, targetPort: 5432 }], selector: { app: 'db' } });
  reg.service({ name: 'ext', type: 'ExternalName', externalName: 'example.test' });
  reg.pod({ name: 'db-0', labels: { app: 'db' }, ip: '10.244.1.5', hostname: 'db-0' });
  reg.pod({ name: 'db-x', labels: { app: 'db' }, ip: '10.244.2.5' });
  reg.pod({ name: 'db-sick', labels: { app: 'db' }, ip: '10.244.3.5', ready: false });
  reg.pod({ name: 'other', namespace: 'team', ip: '10.244.1.9' });
  dns = new ClusterDns({ cache: reg, allow: ['127.0.0.0/8'], listen: [{ address: '127.0.0.1', port: 0 }], upstreams: [`127.0.0.1:${upstream.port}`] });
  await dns.start();
  port = dns.addresses()[0]!.port;
});

after(async () => {
  await dns?.stop();
  await upstream.stop();
});

describe('records of the Kubernetes DNS specification 1.1.0', () => {
  test('ClusterIP Service: A, SRV of a named port, PTR; authoritative, TTL 5', async () => {
    const a = await ask(`web.default.svc.${Z}`, 'A');
    assert.deepEqual(data(a), ['A "10.96.0.20"']);
    assert.equal(ttl(a), 5);
    assert.ok((a.flags ?? 0) & 0x0400, 'AA set');
    assert.deepEqual(data(await ask(`_http._tcp.web.default.svc.${Z}`, 'SRV')), [`SRV {"priority":0,"weight":100,"port":80,"target":"web.default.svc.${Z}"}`]);
    assert.deepEqual(data(await ask('20.0.96.10.in-addr.arpa', 'PTR')), [`PTR "web.default.svc.${Z}"`]);
  });

  test('headless Service: one A per ready endpoint, hostname records, SRV per endpoint, endpoint PTR', async () => {
    assert.deepEqual(data(await ask(`db.default.svc.${Z}`, 'A')), ['A "10.244.1.5"', 'A "10.244.2.5"']);
    assert.deepEqual(data(await ask(`db-0.db.default.svc.${Z}`, 'A')), ['A "10.244.1.5"']);
    assert.deepEqual(data(await ask(`10-244-2-5.db.default.svc.${Z}`, 'A')), ['A "10.244.2.5"']);
    assert.deepEqual(data(await ask(`_pg._tcp.db.default.svc.${Z}`, 'SRV')), [
      `SRV {"priority":0,"weight":100,"port":5432,"target":"10-244-2-5.db.default.svc.${Z}"}`,
      `SRV {"priority":0,"weight":100,"port":5432,"target":"db-0.db.default.svc.${Z}"}`,
    ]);
    assert.deepEqual(data(await ask('5.1.244.10.in-addr.arpa', 'PTR')), [`PTR "db-0.db.default.svc.${Z}"`]);
    assert.equal(rcode(await ask(`10-244-3-5.db.default.svc.${Z}`, 'A')), 'NXDOMAIN', 'a not-ready endpoint has no record');
  });

  test('pods: a-b-c-d.<ns>.pod.<zone> A, and the pod IP PTR when no Service names it', async () => {
    assert.deepEqual(data(await ask(`10-244-1-9.team.pod.${Z}`, 'A')), ['A "10.244.1.9"']);
    assert.deepEqual(data(await ask('9.1.244.10.in-addr.arpa', 'PTR')), [`PTR "10-244-1-9.team.pod.${Z}"`]);
    assert.equal(rcode(await ask(`10-244-1-999.team.pod.${Z}`, 'A')), 'NXDOMAIN');
  });

  test('ExternalName: CNAME, followed by the target resolved upstream; a CNAME query gets the CNAME alone', async () => {
    const a = await ask(`ext.default.svc.${Z}`, 'A');
    assert.deepEqual(data(a), ['A "203.0.113.1"', 'CNAME "example.test"']);
    assert.equal(a.answers![0]!.type, 'CNAME');
    assert.deepEqual(data(await ask(`ext.default.svc.${Z}`, 'CNAME')), ['CNAME "example.test"']);
  });

  test('dns-version TXT 1.1.0; SOA and NS at the apex', async () => {
    const t = await ask(`dns-version.${Z}`, 'TXT');
    assert.equal(String((t.answers![0] as { data: Buffer[] }).data[0]), '1.1.0');
    assert.equal((await ask(Z, 'SOA')).answers![0]!.type, 'SOA');
    assert.deepEqual(data(await ask(Z, 'NS')), [`NS "ns.dns.${Z}"`]);
  });

  test('names are matched without regard to case, and the question comes back as asked', async () => {
    const a = await ask(`WeB.Default.SVC.Cluster.Local`, 'A');
    assert.deepEqual(data(a), ['A "10.96.0.20"']);
    assert.equal(a.questions![0]!.name, 'WeB.Default.SVC.Cluster.Local');
  });
});

describe('negative answers', () => {
  const soaIn = (p: Packet) => {
    const soa = p.authorities?.find((r) => r.type === 'SOA') as { name: string; ttl: number; data: { minimum: number } } | undefined;
    assert.ok(soa, 'SOA in authority');
    assert.equal(soa.name, Z);
    assert.equal(soa.data.minimum, 5);
    assert.equal(soa.ttl, 5);
  };

  test('a name that does not exist: NXDOMAIN with the SOA', async () => {
    const p = await ask(`nope.default.svc.${Z}`, 'A');
    assert.equal(rcode(p), 'NXDOMAIN');
    assert.equal(p.answers!.length, 0);
    soaIn(p);
  });

  test('a name without the asked type (AAAA of an IPv4 Service) and an empty non-terminal: NODATA with the SOA', async () => {
    for (const [name, type] of [
      [`web.default.svc.${Z}`, 'AAAA'],
      [`web.default.svc.${Z}`, 'TXT'],
      [`default.svc.${Z}`, 'A'],
      [`svc.${Z}`, 'A'],
      [`_tcp.web.default.svc.${Z}`, 'SRV'],
    ] as const) {
      const p = await ask(name, type);
      assert.equal(rcode(p), 'NOERROR', `${name} ${type}`);
      assert.equal(p.answers!.length, 0, `${name} ${type}`);
      soaIn(p);
    }
  });
});

describe('the registry by watch', () => {
  test('a Service applied is resolvable at once, changed and deleted too; cached answers follow', async () => {
    const name = `late.default.svc.${Z}`;
    assert.equal(rcode(await ask(name, 'A')), 'NXDOMAIN');
    reg.service({ name: 'late', clusterIP: '10.96.0.77' });
    assert.deepEqual(data(await ask(name, 'A')), ['A "10.96.0.77"']);
    reg.service({ name: 'late', clusterIP: '10.96.0.78' });
    assert.deepEqual(data(await ask(name, 'A')), ['A "10.96.0.78"']);
    assert.equal((await ask('77.0.96.10.in-addr.arpa', 'PTR')).flags! & 0x0400, 0, 'the old PTR is not ours any more: forwarded');
    reg.delete('service', 'default/late');
    assert.equal(rcode(await ask(name, 'A')), 'NXDOMAIN');
    assert.equal(rcode(await ask(`default.svc.${Z}`, 'A')), 'NOERROR', 'other Services keep the namespace');
  });

  test('headless endpoints follow pods: readiness, labels, deletion', async () => {
    const name = `db.default.svc.${Z}`;
    reg.pod({ name: 'db-sick', labels: { app: 'db' }, ip: '10.244.3.5', ready: true });
    assert.deepEqual(data(await ask(name, 'A')), ['A "10.244.1.5"', 'A "10.244.2.5"', 'A "10.244.3.5"']);
    reg.pod({ name: 'db-sick', labels: { app: 'db' }, ip: '10.244.3.5', ready: true, terminating: true });
    assert.deepEqual(data(await ask(name, 'A')), ['A "10.244.1.5"', 'A "10.244.2.5"']);
    reg.pod({ name: 'db-x', labels: {}, ip: '10.244.2.5' });
    assert.deepEqual(data(await ask(name, 'A')), ['A "10.244.1.5"']);
    assert.deepEqual(data(await ask('5.2.244.10.in-addr.arpa', 'PTR')), [`PTR "10-244-2-5.default.pod.${Z}"`], 'back to the pod PTR');
    reg.pod({ name: 'db-x', labels: { app: 'db' }, ip: '10.244.2.5' });
    reg.delete('pod', 'default/db-sick');
    assert.deepEqual(data(await ask(name, 'A')), ['A "10.244.1.5"', 'A "10.244.2.5"']);
  });

  test('a headless Service without ready endpoints exists (NODATA); EndpointSlices give endpoints to one without a selector', async () => {
    reg.service({ name: 'manual', clusterIP: 'None', ports: [{ name: 'x', protocol: 'UDP', port: 9, targetPort: 9 }] });
    const empty = await ask(`manual.default.svc.${Z}`, 'A');
    assert.equal(rcode(empty), 'NOERROR');
    assert.equal(empty.answers!.length, 0);
    reg.slice({
      namespace: 'default',
      name: 'manual-1',
      serviceName: 'manual',
      ports: [{ name: 'x', protocol: 'UDP', port: 9009 }],
      endpoints: [{ addresses: ['192.0.2.10'], conditions: { ready: true, serving: true, terminating: false }, hostname: 'box' }],
    });
    assert.deepEqual(data(await ask(`manual.default.svc.${Z}`, 'A')), ['A "192.0.2.10"']);
    assert.deepEqual(data(await ask(`_x._udp.manual.default.svc.${Z}`, 'SRV')), [
      `SRV {"priority":0,"weight":100,"port":9009,"target":"box.manual.default.svc.${Z}"}`,
    ]);
    reg.delete('slice', 'default/manual-1');
    assert.equal((await ask(`manual.default.svc.${Z}`, 'A')).answers!.length, 0);
    reg.delete('service', 'default/manual');
  });

  test('a resync rebuilds the table from the maps', async () => {
    reg.services.set('default/quiet', { ...reg.services.get('default/web')!, name: 'quiet', clusterIP: '10.96.0.99' });
    reg.emit({ kind: 'resync' });
    assert.deepEqual(data(await ask(`quiet.default.svc.${Z}`, 'A')), ['A "10.96.0.99"']);
    reg.delete('service', 'default/quiet');
  });
});

describe('transport', () => {
  before(() => {
    for (let i = 1; i <= 60; i++) reg.pod({ name: `many-${i}`, labels: { app: 'many' }, ip: `10.244.9.${i}` });
    reg.service({ name: 'many', clusterIP: 'None', selector: { app: 'many' } });
  });

  test('an answer too big for UDP comes with TC and no records; over TCP it comes whole', async () => {
    const name = `many.default.svc.${Z}`;
    const plain = await ask(name, 'A');
    assert.ok((plain.flags ?? 0) & 0x0200, 'TC without EDNS (512 bytes)');
    assert.equal(plain.answers!.length, 0);
    const edns = await ask(name, 'A', 4096);
    assert.ok((edns.flags ?? 0) & 0x0200, 'TC at our 1232-byte limit');
    assert.ok(
      edns.additionals!.some((a) => a.type === 'OPT'),
      'OPT echoed',
    );
    const [full] = await askTcp('127.0.0.1', port, [query(name, 'A')]);
    assert.equal(full!.answers!.length, 60);
    assert.equal((full!.flags ?? 0) & 0x0200, 0);
  });

  test('TCP takes pipelined queries on one connection', async () => {
    const answers = await askTcp('127.0.0.1', port, [
      query(`web.default.svc.${Z}`, 'A', { id: 1 }),
      query(`nope.${Z}`, 'A', { id: 2 }),
      query('example.test', 'A', { id: 3 }),
    ]);
    assert.deepEqual(answers.map((a) => a.id).sort(), [1, 2, 3]);
  });

  test('EDNS: an OPT in, an OPT out with our size; version 1 gets BADVERS', async () => {
    const p = await ask(`web.default.svc.${Z}`, 'A', 1232);
    const opt = p.additionals!.find((a) => a.type === 'OPT') as { udpPayloadSize: number };
    assert.equal(opt.udpPayloadSize, 1232);
    const q = query(`web.default.svc.${Z}`, 'A', { edns: 1232 });
    q[q.length - 5] = 1;
    const bad = await askUdp('127.0.0.1', port, q);
    assert.equal((bad.additionals!.find((a) => a.type === 'OPT') as { extendedRcode: number }).extendedRcode, 1);
  });
});

describe('forwarding', () => {
  test('names outside the zone go upstream once, then come from the cache with their TTL counting down', async () => {
    const before = upstream.asked.get('example.test') ?? 0;
    const first = await ask('Example.Test', 'A');
    assert.deepEqual(data(first), ['A "203.0.113.1"']);
    assert.equal(first.questions![0]!.name, 'Example.Test');
    const count = upstream.asked.get('example.test')!;
    assert.ok(count <= before + 1);
    await new Promise((r) => setTimeout(r, 1100));
    const again = await ask('example.test', 'A');
    assert.equal(upstream.asked.get('example.test'), count, 'served from the cache');
    assert.ok(ttl(again) < 30 && ttl(again) >= 28, `TTL ${ttl(again)} counts down`);
    assert.equal(again.additionals?.length ?? 0, 0, 'no OPT to a query without one');
  });

  test('an answer whose TTL ran out is asked again; NXDOMAIN is cached by its SOA negative TTL', async () => {
    await ask('short.test', 'A');
    await new Promise((r) => setTimeout(r, 1100));
    await ask('short.test', 'A');
    assert.equal(upstream.asked.get('short.test'), 2);
    assert.equal(rcode(await ask('gone.test', 'A')), 'NXDOMAIN');
    assert.equal(rcode(await ask('gone.test', 'A')), 'NXDOMAIN');
    assert.equal(upstream.asked.get('gone.test'), 1);
  });

  test('an upstream answer truncated over UDP is fetched over TCP, and truncated again for a UDP client it does not fit', async () => {
    const [tcp] = await askTcp('127.0.0.1', port, [query('big.test', 'TXT')]);
    assert.equal(tcp!.answers!.length, 30);
    const udp = await ask('big.test', 'TXT');
    assert.ok((udp.flags ?? 0) & 0x0200);
  });

  test('an upstream that does not answer: the next one; none answering: SERVFAIL', async () => {
    const silent = new TinyUpstream({});
    const lone = new ClusterDns({
      cache: reg,
      allow: ['127.0.0.0/8'],
      listen: [{ address: '127.0.0.1', port: 0 }],
      upstreams: ['127.0.0.1:9', `127.0.0.1:${upstream.port}`],
    });
    await lone.start();
    try {
      const p = await askUdp('127.0.0.1', lone.addresses()[0]!.port, query('example.test', 'A'), 5000);
      assert.deepEqual(data(p), ['A "203.0.113.1"']);
    } finally {
      await lone.stop();
      await silent.stop();
    }
    const none = new ClusterDns({ cache: reg, allow: ['127.0.0.0/8'], listen: [{ address: '127.0.0.1', port: 0 }], upstreams: [] });
    await none.start();
    try {
      assert.equal(rcode(await askUdp('127.0.0.1', none.addresses()[0]!.port, query('example.test', 'A'))), 'SERVFAIL');
    } finally {
      await none.stop();
    }
  });
});

describe('bad input', () => {
  const respond = async (msg: Buffer, src = '127.0.0.1') => {
    const out = dns.respond(msg, src, true);
    return out instanceof Promise ? await out : out;
  };
  const rcodeOf = (b: Buffer | undefined) => (b ? b.readUInt16BE(2) & 15 : undefined);

  test('clients outside the allowed ranges get REFUSED, for the zone and for forwarding', async () => {
    assert.equal(rcodeOf(await respond(query(`web.default.svc.${Z}`, 'A'), '192.0.2.1')), 5);
    assert.equal(rcodeOf(await respond(query('example.test', 'A'), '192.0.2.1')), 5);
    assert.equal(rcodeOf(await respond(query('example.test', 'A'), '::ffff:127.0.0.1')), 0);
  });

  test('opcodes, classes, counts and types it does not serve', async () => {
    const q = query(`web.default.svc.${Z}`, 'A');
    const withFlags = (f: number) => {
      const b = Buffer.from(q);
      b.writeUInt16BE(f, 2);
      return b;
    };
    assert.equal(rcodeOf(await respond(withFlags(2 << 11))), 4, 'STATUS opcode: NOTIMP');
    assert.equal(rcodeOf(await respond(withFlags(5 << 11))), 4, 'UPDATE opcode: NOTIMP');
    assert.equal(await respond(withFlags(0x8000)), undefined, 'a response is not answered');
    const ch = Buffer.from(q);
    ch.writeUInt16BE(3, ch.length - 2);
    assert.equal(rcodeOf(await respond(ch)), 5, 'CHAOS class: REFUSED');
    const two = Buffer.from(q);
    two.writeUInt16BE(2, 4);
    assert.equal(rcodeOf(await respond(two)), 1, 'two questions: FORMERR');
    assert.equal(rcodeOf(await respond(query(Z, 'AXFR'))), 4, 'AXFR: NOTIMP');
    assert.equal(await respond(Buffer.from([1, 2, 3])), undefined, 'shorter than a header: dropped');
  });

  test('names: a compression pointer in the question, labels past the end, a name over 255 bytes: FORMERR', async () => {
    const header = Buffer.from([0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert.equal(rcodeOf(await respond(Buffer.concat([header, Buffer.from([0xc0, 12, 0, 1, 0, 1])]))), 1);
    assert.equal(rcodeOf(await respond(Buffer.concat([header, Buffer.from([40, 97, 97])]))), 1);
    const long = Buffer.concat([
      header,
      ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([60]), Buffer.alloc(60, 97)])),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    assert.equal(rcodeOf(await respond(long)), 1);
    const loop = Buffer.concat([query(`web.default.svc.${Z}`, 'A'), Buffer.from([0xc0, 0x0c])]);
    loop.writeUInt16BE(1, 10);
    assert.equal(rcodeOf(await respond(loop)), 1, 'an additional record cut short');
    const selfLoop = Buffer.concat([query(`web.default.svc.${Z}`, 'A'), Buffer.from([0xc0, loop.length - 2 + 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])]);
    selfLoop.writeUInt16BE(1, 10);
    assert.ok([0, 1].includes(rcodeOf(await respond(selfLoop))!), 'a pointer to itself is skipped, never followed');
  });

  test('fuzz: 20,000 random and mutated messages never throw, and every answer parses', async () => {
    const seeds = [query(`web.default.svc.${Z}`, 'A'), query(`_pg._tcp.db.default.svc.${Z}`, 'SRV', { edns: 1232 }), query('5.1.244.10.in-addr.arpa', 'PTR')];
    let answered = 0;
    for (let i = 0; i < 20_000; i++) {
      let msg: Buffer;
      if (i % 4 === 0) msg = randomBytes(1 + (i % 300));
      else {
        msg = Buffer.from(seeds[i % seeds.length]!);
        for (let k = 0; k <= i % 5; k++) msg[(i * 7919 + k * 104729) % msg.length] = (i * 31 + k) & 255;
        if (i % 7 === 0) msg = msg.subarray(0, (i * 13) % msg.length);
      }
      const out = dns.respond(msg, '127.0.0.1', true);
      if (out instanceof Promise) continue;
      if (out) {
        answered++;
        assert.ok(out.length >= 12);
        decode(out);
      }
    }
    assert.ok(answered > 1000);
    assert.deepEqual(data(await ask(`web.default.svc.${Z}`, 'A')), ['A "10.96.0.20"'], 'still serving');
  });

  test('fuzz over the sockets: garbage over UDP and TCP, then a good query is answered', async () => {
    const { createSocket } = await import('node:dgram');
    const { connect } = await import('node:net');
    const sock = createSocket('udp4');
    for (let i = 0; i < 500; i++) sock.send(randomBytes(i % 600), port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    sock.close();
    await new Promise<void>((resolve) => {
      const c = connect({ host: '127.0.0.1', port }, () => {
        c.write(Buffer.concat([Buffer.from([0xff, 0xff]), randomBytes(3000)]));
        c.end();
      });
      c.on('close', () => resolve());
      c.on('error', () => resolve());
    });
    assert.deepEqual(data(await ask(`web.default.svc.${Z}`, 'A')), ['A "10.96.0.20"']);
    const s = dns.stats();
    assert.ok(s.dropped > 0 && s.queries.udp > 100);
  });
});
