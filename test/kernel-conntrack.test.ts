/**
 * Conntrack over netlink against a real kernel, in a disposable namespace: UDP flows that a nat
 * output chain DNATs (as the service proxy does) or leaves alone, listed by the reader and deleted by
 * filter; the `conntrack` tool (conntrack-tools) is the independent oracle of what remains.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { clearUdp, listEntries, matchFlow, type CtEntry, type FlowFilter } from '../src/kernel/conntrack.js';
import * as op from '../src/kernel/ops.js';
import { apply, Plan } from '../src/kernel/plan.js';
import { Topology } from '../src/topo/topology.js';

let topo: Topology;
let ns: string;

/** Source ports of each kind of flow: to the "ClusterIP" DNATed to .5 or .6, not DNATed, to the "NodePort" DNATed or not. */
const PORTS = { toFive: [40000, 40009], toSix: [40010, 40019], undnated: [40030, 40034], nodePort: [40020, 40029], nodePortLocal: [40035, 40039] };
const range = ([a, b]: number[]): number[] => Array.from({ length: b! - a! + 1 }, (_, i) => a! + i);

before(async () => {
  topo = await Topology.create();
  ns = await topo.netns('ct');
  await apply(
    new Plan().add(
      op.addVeth({ ns, name: 'v0', peer: { name: 'v1' } }),
      op.addAddr({ ns, addr: '198.18.7.1/24', dev: 'v0' }),
      op.setLink({ ns, dev: 'v0', up: true }),
      op.setLink({ ns, dev: 'v1', up: true }),
      op.addRoute({ ns, dst: '10.96.0.0/12', dev: 'v0' }),
      // Unanswered UDP entries live 30 s by default: longer than a slow run of this file.
      op.setSysctl({ ns, key: 'net.netfilter.nf_conntrack_udp_timeout', value: '600' }),
    ),
  );
  const rules = [
    'table ip t {',
    '  chain out {',
    '    type nat hook output priority -100;',
    `    ip daddr 10.96.0.10 udp dport 53 udp sport ${PORTS.toFive.join('-')} dnat to 198.18.7.5:5353`,
    `    ip daddr 10.96.0.10 udp dport 53 udp sport ${PORTS.toSix.join('-')} dnat to 198.18.7.6:5353`,
    `    ip daddr 198.18.7.1 udp dport 30053 udp sport ${PORTS.nodePort.join('-')} dnat to 198.18.7.5:5353`,
    '  }',
    '}',
  ].join('\n');
  const r = await topo.exec('ct', ['nft', '-f', '-'], { input: rules });
  assert.equal(r.code, 0, r.stderr);
  const sends = [
    ...[...range(PORTS.toFive), ...range(PORTS.toSix)].map((p) => [p, '10.96.0.10', 53]),
    ...range(PORTS.undnated).map((p) => [p, '10.96.0.11', 53]),
    ...[...range(PORTS.nodePort), ...range(PORTS.nodePortLocal)].map((p) => [p, '198.18.7.1', 30053]),
  ];
  const script = `const d=require('dgram');let n=${sends.length};for(const [p,ip,port] of ${JSON.stringify(sends)}){const s=d.createSocket('udp4');s.bind(p,()=>s.send('x',port,ip,()=>{s.close();if(--n===0)process.exit()}))}`;
  const sent = await topo.exec('ct', [process.execPath, '-e', script]);
  assert.equal(sent.code, 0, sent.stderr);
});

after(async () => {
  await topo?.destroy();
});

const key = (e: { src: string; dst: string; sport: number; dport: number; rsrc: string; rsport: number }) =>
  `${e.src}:${e.sport} > ${e.dst}:${e.dport} < ${e.rsrc}:${e.rsport}`;
const keyOf = (e: CtEntry) => key({ src: e.orig.src, dst: e.orig.dst, sport: e.orig.sport!, dport: e.orig.dport!, rsrc: e.reply.src, rsport: e.reply.sport! });

/** What `conntrack -L -p udp` (with more options) prints, as keys. */
async function tool(...args: string[]): Promise<string[]> {
  const r = await topo.exec('ct', ['conntrack', '-L', '-p', 'udp', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('udp'))
    .map((l) => {
      const v = (k: string) => [...l.matchAll(new RegExp(`\\b${k}=(\\S+)`, 'g'))].map((m) => m[1]!);
      const [src, dst, sport, dport] = [v('src'), v('dst'), v('sport'), v('dport')];
      return key({ src: src[0]!, dst: dst[0]!, sport: Number(sport[0]), dport: Number(dport[0]), rsrc: src[1]!, rsport: Number(sport[1]) });
    })
    .sort();
}

const listed = async () => (await listEntries(ns, 17)).map(keyOf).sort();
const ours = (keys: string[]) => keys.filter((k) => /^198\.18\.7\.1:400\d\d /.test(k));
const bySport = (keys: string[], ports: number[]) => keys.filter((k) => ports.includes(Number(/^[^:]+:(\d+)/.exec(k)![1])));
const deleteWhere = (f: FlowFilter) => clearUdp(ns, (all) => all.filter((e) => matchFlow(e, f)));

describe('conntrack over netlink', () => {
  it('lists the UDP entries conntrack -L lists, with the DNAT in the reply and the status', async () => {
    const entries = await listEntries(ns, 17);
    assert.equal(ours(entries.map(keyOf)).length, 40);
    assert.deepEqual(ours(await listed()), ours(await tool()));
    const five = entries.find((e) => e.orig.sport === PORTS.toFive[0])!;
    assert.deepEqual(five.orig, { src: '198.18.7.1', dst: '10.96.0.10', sport: 40000, dport: 53 });
    assert.deepEqual(five.reply, { src: '198.18.7.5', dst: '198.18.7.1', sport: 5353, dport: 40000 });
    assert.equal(five.proto, 17);
    assert.equal(five.zone, 0);
    const dnated = entries.filter((e) => e.dstNat).map(keyOf);
    assert.deepEqual(ours(dnated).sort(), ours(await tool('--dst-nat')));
    assert.equal(ours(dnated).length, 30);
    assert.ok((await listEntries(ns)).length >= entries.length, 'every protocol when none is given');
  });

  it('deletes by reply source: the flows one endpoint answers, not the others', async () => {
    const before = await listed();
    const n = await deleteWhere({ origDst: '10.96.0.10', origDport: 53, replySrc: '198.18.7.5', replySport: 5353 });
    assert.equal(n, 10);
    const gone = bySport(before, range(PORTS.toFive));
    const want = before.filter((k) => !gone.includes(k));
    assert.deepEqual(ours(await listed()), ours(want));
    assert.deepEqual(ours(await tool()), ours(want));
  });

  it('deletes the flows never DNATed (the reply from the destination itself), to an IP:port and to a port', async () => {
    assert.equal(await deleteWhere({ origDst: '10.96.0.11', origDport: 53, replySrc: '10.96.0.11', replySport: 53 }), 5);
    assert.equal(await deleteWhere({ origDport: 30053, replySport: 30053 }), 5);
    const left = ours(await tool());
    assert.deepEqual(bySport(left, [...range(PORTS.undnated), ...range(PORTS.nodePortLocal)]), []);
    assert.equal(bySport(left, range(PORTS.nodePort)).length, 10, 'the DNATed flows to the port stay');
    assert.deepEqual(ours(await listed()), left);
  });

  it('deletes the DNATed flows to a port only', async () => {
    assert.equal(await deleteWhere({ origDport: 30053, dstNat: true }), 10);
    assert.deepEqual(ours(await tool()), bySport(ours(await listed()), range(PORTS.toSix)));
    assert.equal(ours(await tool()).length, 10);
  });

  it('deletes exact entries; one that went meanwhile is no error', async () => {
    const [first, second] = range(PORTS.toSix);
    const n = await clearUdp(ns, (all) => {
      const gone = spawnSync('ip', ['netns', 'exec', topo.name('ct'), 'conntrack', '-D', '-p', 'udp', '--sport', String(second)], { encoding: 'utf8' });
      assert.match(gone.stderr, /1 flow entries have been deleted/);
      return all.filter((e) => e.orig.sport === first || e.orig.sport === second);
    });
    assert.equal(n, 1);
    const left = ours(await tool());
    assert.deepEqual(left, bySport(ours(await listed()), range(PORTS.toSix)));
    assert.deepEqual(bySport(left, [first!, second!]), []);
    assert.equal(left.length, 8);
    assert.equal(await clearUdp(ns, () => []), 0);
  });
});
