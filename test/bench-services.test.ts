import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Driver, type Done, type ServicesReport } from '../src/bench/services.js';
import { listNetns } from '../src/kernel/netns.js';
import { nftSetKeys } from '../src/kernel/nfnl.js';
import { Topology } from '../src/topo/topology.js';

/**
 * The measuring half of `weft bench services` (services-driver.ts, client role) in a namespace of
 * its own, against servers on that namespace's loopback: connect times, and a watch that ends at the
 * first answer from the wanted pod.
 */
let topo: Topology;
let client: Driver;

const server = (port: number, pod: string) =>
  topo.spawn('a', [
    process.execPath,
    '-e',
    `require('node:http').createServer((q, r) => r.end(JSON.stringify({ pod: ${JSON.stringify(pod)} }))).listen(${port}, '127.0.0.1', () => console.log('up'))`,
  ]);

const listening = (child: ReturnType<typeof server>) => new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));

before(async () => {
  topo = await Topology.create();
  await topo.netns('a');
  client = new Driver('the test client', topo.name('a'), ['client']);
});

after(async () => {
  client.stop();
  await topo.destroy();
});

test('connect: one sample per round and target after the warm-up, none failed', async () => {
  await listening(server(8080, 'one'));
  const r = await client.ask<Extract<Done, { samples: number[][] }>>({ op: 'connect', targets: [{ host: '127.0.0.1', port: 8080 }], count: 40, warmup: 5 });
  assert.equal(r.failures, 0);
  assert.equal(r.samples[0]!.length, 40);
  assert.ok(r.samples[0]!.every((ms) => ms > 0 && ms < 2000));
});

test('connect: a refused target counts as a failure, not a sample', async () => {
  const r = await client.ask<Extract<Done, { samples: number[][]; failures: number }>>({
    op: 'connect',
    targets: [{ host: '127.0.0.1', port: 8089 }],
    count: 3,
    warmup: 0,
  });
  assert.equal(r.failures, 3);
  assert.deepEqual(r.samples, [[]]);
});

test('watch: armed at once, done at the first answer from the wanted pod and not before', async () => {
  const old = server(8081, 'old');
  await listening(old);
  let armedNs = 0n;
  const seen = client.ask<Extract<Done, { atNs: string; tries: number }>>(
    { op: 'watch', host: '127.0.0.1', port: 8081, want: 'new', intervalMs: 3, timeoutMs: 20_000 },
    (e) => 'armed' in e && (armedNs = process.hrtime.bigint()),
  );
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(armedNs > 0n, 'armed before any answer from the wanted pod');
  old.kill();
  await new Promise((r) => old.on('exit', r));
  const changedNs = process.hrtime.bigint();
  await listening(server(8081, 'new'));
  const r = await seen;
  assert.ok(BigInt(r.atNs) >= changedNs - 5_000_000n, 'no answer counted from before the change');
  assert.ok(r.tries > 10);
});

test('watch: gives up after its timeout with what it waited for', async () => {
  await assert.rejects(
    client.ask({ op: 'watch', host: '127.0.0.1', port: 8082, intervalMs: 5, timeoutMs: 300 }),
    /no answer at 127\.0\.0\.1:8082 within 300 ms/,
  );
});

test("nftSetKeys reads one map's keys, each field of a concatenation padded to 4 bytes", async () => {
  const map =
    'map m { type ipv4_addr . inet_proto . inet_service : verdict; elements = { 10.100.0.1 . tcp . 80 : goto c, 10.100.1.2 . udp . 5201 : goto c }; }';
  const r = await topo.exec('a', ['nft', '-f', '-'], { input: `table ip t { chain c { }; ${map}; }` });
  assert.equal(r.code, 0, r.stderr);
  const keys = await nftSetKeys(topo.path('a'), 'ip', 't', 'm');
  assert.deepEqual(keys.map((k) => k.toString('hex')).sort(), ['0a6400010600000000500000', '0a6401021100000014510000']);
  await assert.rejects(nftSetKeys(topo.path('a'), 'ip', 't', 'absent'), /No such file/);
});

test('weft bench services --quick, made small: a report for N=10 and 1000 with every figure, and its lab gone', () => {
  const weft = fileURLToPath(new URL('../../bin/weft', import.meta.url));
  const r = spawnSync(process.execPath, [weft, 'bench', 'services', '--quick', '--connects', '50', '--rounds', '1', '--seconds', '1', '--json'], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const report = JSON.parse(r.stdout) as ServicesReport;
  assert.deepEqual(report.problems, []);
  assert.deepEqual(
    report.rows.map((x) => x.services),
    [10, 1000],
  );
  for (const x of report.rows) {
    assert.ok(x.elements >= x.services, `N=${x.services}: ${x.elements} elements`);
    assert.ok(x.throughputRatio > 0 && x.addMs > 0 && x.moveMs > 0 && x.fullSyncSeconds > 0);
  }
  assert.ok(report.bars.some((b) => b.what === 'connect p50 at 1000 vs 10'));
  assert.match(r.stderr, /N=1000: writing 990 Services/);
  const lab = /a 2-node lab of its own \((\w+)\)/.exec(r.stderr)?.[1];
  assert.ok(lab);
  assert.deepEqual(
    listNetns().filter((n) => n.startsWith(`wl.${lab}.`)),
    [],
    'the bench removed its lab',
  );
});
