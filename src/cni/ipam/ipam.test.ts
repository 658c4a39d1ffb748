import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CniError, Code } from '../spec.js';
import { allocate, collect, parseIpamConfig, release, status, verify, type IpamConfig } from './ipam.js';

let root: string;
let n = 0;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'weft-ipam-test-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A fresh network (its own dataDir) with the given ipam section. */
function net(section: Record<string, unknown>): IpamConfig {
  return parseIpamConfig({ dataDir: join(root, `d${++n}`), ...section }, 'pods');
}

const v4net = (subnet = '10.1.0.0/24', extra: Record<string, unknown> = {}) => net({ ranges: [[{ subnet, ...extra }]] });

const att = (containerID: string, ifname = 'eth0') => ({ containerID, ifname });

async function addr(config: IpamConfig, id: string, ifname = 'eth0'): Promise<string> {
  const { ips = [] } = await allocate(config, att(id, ifname));
  const [ip, ...more] = ips;
  assert.ok(ip && more.length === 0, `expected one address, got ${JSON.stringify(ips)}`);
  return ip.address;
}

/** The reservation files of a network: ip -> file contents. */
function files(config: IpamConfig): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(config.dataDir)) {
    if (/^[0-9.]+$|:/.test(name)) out.set(name, readFileSync(join(config.dataDir, name), 'utf8'));
  }
  return out;
}

async function rejects(p: Promise<unknown>, code: number, match?: RegExp): Promise<CniError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof CniError, `expected a CniError with code ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (match) assert.match(caught.message, match);
  return caught;
}

describe('weft-ipam: ranges like host-local', () => {
  it('hands out .2 first, with the gateway .1, in host-local files', async () => {
    const c = v4net();
    assert.equal(c.dataDir, join(root, `d${n}`, 'pods'), 'state lives in <dataDir>/<network name>');
    const r = await allocate(c, att('c1'));
    assert.deepEqual(r.ips, [{ address: '10.1.0.2/24', gateway: '10.1.0.1' }]);
    assert.equal(readFileSync(join(c.dataDir, '10.1.0.2'), 'utf8'), 'c1\r\neth0');
    assert.equal(readFileSync(join(c.dataDir, 'last_reserved_ip.0'), 'utf8').trim(), '10.1.0.2');
    assert.ok(readdirSync(c.dataDir).includes('lock'));
    assert.deepEqual(
      readdirSync(c.dataDir).filter((f) => f.startsWith('.')),
      [],
      'no temp files are left',
    );
    assert.equal(await addr(c, 'c2'), '10.1.0.3/24');
  });

  it('skips a gateway given inside the range, and honours rangeStart/rangeEnd', async () => {
    const c = v4net('10.1.0.0/24', { gateway: '10.1.0.3', rangeStart: '10.1.0.2', rangeEnd: '10.1.0.5' });
    const got = [await addr(c, 'a'), await addr(c, 'b'), await addr(c, 'c')];
    assert.deepEqual(got, ['10.1.0.2/24', '10.1.0.4/24', '10.1.0.5/24']);
    const r = await allocate(v4net('10.1.0.0/24', { gateway: '10.1.0.254' }), att('x'));
    assert.deepEqual(r.ips, [{ address: '10.1.0.1/24', gateway: '10.1.0.254' }], 'with the gateway elsewhere, .1 is free');
  });

  it('allocates round robin from last_reserved_ip, wrapping past the end', async () => {
    const c = v4net();
    assert.equal(await addr(c, 'a'), '10.1.0.2/24');
    await release(c.dataDir, att('a'));
    assert.equal(await addr(c, 'b'), '10.1.0.3/24', 'a released address is not reused at once');
    writeFileSync(join(c.dataDir, 'last_reserved_ip.0'), '10.1.0.100');
    assert.equal(await addr(c, 'c'), '10.1.0.101/24', 'state written by host-local steers it too');
    writeFileSync(join(c.dataDir, 'last_reserved_ip.0'), '10.1.0.254');
    assert.equal(await addr(c, 'd'), '10.1.0.2/24', 'after .254 it wraps to the start, skipping the gateway .1');
    writeFileSync(join(c.dataDir, 'last_reserved_ip.0'), '192.168.9.9');
    assert.equal(await addr(c, 'e'), '10.1.0.4/24', 'a last address outside the range starts over');
  });

  it('uses all ranges of a range set in turn', async () => {
    const c = net({ ranges: [[{ subnet: '10.1.0.0/30' }, { subnet: '10.2.0.0/30' }]] });
    assert.deepEqual([await addr(c, 'a'), await addr(c, 'b')], ['10.1.0.2/30', '10.2.0.2/30']);
    await rejects(allocate(c, att('c')), Code.RangeFull);
  });

  it('gives one address per range set (dual stack), IPv6 up to the last address', async () => {
    const c = net({
      ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00:1::/125' }]],
      routes: [{ dst: '0.0.0.0/0' }, { dst: 'fd00::/8', gw: 'fd00:1::1' }],
    });
    const r = await allocate(c, att('a'));
    assert.deepEqual(r.ips, [
      { address: '10.1.0.2/24', gateway: '10.1.0.1' },
      { address: 'fd00:1::2/125', gateway: 'fd00:1::1' },
    ]);
    assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0' }, { dst: 'fd00::/8', gw: 'fd00:1::1' }]);
    assert.equal(readFileSync(join(c.dataDir, 'last_reserved_ip.1'), 'utf8').trim(), 'fd00:1::2');
    const got = [];
    for (let i = 0; i < 5; i++) got.push((await allocate(c, att(`b${i}`))).ips![1]!.address);
    assert.deepEqual(got, ['fd00:1::3/125', 'fd00:1::4/125', 'fd00:1::5/125', 'fd00:1::6/125', 'fd00:1::7/125']);
  });

  it('a full range is code 101 naming the range, and takes nothing', async () => {
    const c = v4net('10.9.0.0/29', { rangeStart: '10.9.0.2', rangeEnd: '10.9.0.4' });
    for (const id of ['a', 'b', 'c']) await addr(c, id);
    const before = files(c);
    const e = await rejects(allocate(c, att('d')), Code.RangeFull, /10\.9\.0\.0\/29/);
    assert.match(e.message, /10\.9\.0\.2-10\.9\.0\.4/);
    assert.deepEqual(files(c), before);
    // Dual stack: IPv4 free, IPv6 full. The IPv4 address taken first is given back.
    const d = net({ ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00:2::/126' }]] });
    await allocate(d, att('a'));
    await allocate(d, att('b'));
    const held = files(d);
    await rejects(allocate(d, att('c')), Code.RangeFull, /fd00:2::\/126/);
    assert.deepEqual(files(d), held, 'nothing is left for c');
  });

  it('refuses a second allocation for the same container and interface', async () => {
    const c = v4net();
    assert.equal(await addr(c, 'a'), '10.1.0.2/24');
    await rejects(allocate(c, att('a')), Code.InvalidConfig, /10\.1\.0\.2.*already allocated/);
    assert.deepEqual(files(c), new Map([['10.1.0.2', 'a\r\neth0']]));
    assert.equal(await addr(c, 'a', 'net1'), '10.1.0.3/24', 'another interface of the same container is a new attachment');
  });

  it('release frees what the attachment holds, and again finds nothing', async () => {
    const c = v4net();
    await addr(c, 'a');
    await addr(c, 'a', 'net1');
    await addr(c, 'b');
    assert.deepEqual(await release(c.dataDir, att('a')), ['10.1.0.2']);
    assert.deepEqual([...files(c).keys()].sort(), ['10.1.0.3', '10.1.0.4']);
    assert.deepEqual(await release(c.dataDir, att('a')), []);
    assert.deepEqual(await release(join(root, 'never-created'), att('a')), [], 'a data dir that never existed is fine');
    // host-local before 0.8 wrote only the container ID; such a file belongs to every ifname of it.
    writeFileSync(join(c.dataDir, '10.1.0.50'), 'old');
    assert.deepEqual(await release(c.dataDir, att('old')), ['10.1.0.50']);
  });

  it('collect (GC) frees everything no valid attachment owns', async () => {
    const c = v4net();
    for (const id of ['a', 'b', 'c', 'd']) await addr(c, id);
    writeFileSync(join(c.dataDir, '10.1.0.60'), 'b');
    const freed = (await collect(c.dataDir, [att('b'), att('d'), att('zzz')])).map((r) => r.ip);
    assert.deepEqual(freed.sort(), ['10.1.0.2', '10.1.0.4']);
    assert.deepEqual([...files(c).keys()].sort(), ['10.1.0.3', '10.1.0.5', '10.1.0.60']);
    assert.deepEqual((await collect(c.dataDir, [att('b', 'net1')])).map((r) => r.ip).sort(), ['10.1.0.3', '10.1.0.5']);
    assert.deepEqual([...files(c).keys()], ['10.1.0.60'], 'an old-format file of a valid container stays');
    assert.deepEqual(
      (await collect(c.dataDir, [])).map((r) => r.ip),
      ['10.1.0.60'],
    );
    assert.deepEqual([...files(c).keys()], []);
    assert.ok(readdirSync(c.dataDir).includes('last_reserved_ip.0'), 'GC keeps the round-robin position');
  });

  it('concurrent allocations in one process never share an address', async () => {
    const c = v4net('10.3.0.0/24');
    const got = await Promise.all(Array.from({ length: 60 }, (_, i) => addr(c, `p${i}`)));
    assert.equal(new Set(got).size, 60);
    assert.equal(files(c).size, 60);
    for (const [ip, owner] of files(c)) assert.ok(got.includes(`${ip}/24`), `${ip} (${owner}) was handed out`);
  });

  it('verify (CHECK) and status (STATUS)', async () => {
    const c = v4net('10.4.0.0/30');
    status(c);
    const ip = await addr(c, 'a');
    verify(c.dataDir, att('a'), [{ address: ip }]);
    assert.throws(
      () => verify(c.dataDir, att('b'), [{ address: ip }]),
      (e: CniError) => e.code === Code.InvalidConfig,
    );
    assert.throws(
      () => verify(c.dataDir, att('a'), [{ address: '10.4.0.1/30' }]),
      (e: CniError) => e.code === Code.InvalidConfig,
    );
    assert.throws(
      () => status(c),
      (e: CniError) => e.code === Code.NotAvailable && /10\.4\.0\.0\/30/.test(e.message),
    );
  });
});

describe('weft-ipam: configuration', () => {
  it('bad ranges are code 7', () => {
    const bad: Record<string, unknown>[] = [
      { ranges: [[{ subnet: '10.1.0.0/33' }]] },
      { ranges: [[{ subnet: '10.1.0.300/24' }]] },
      { ranges: [[{ subnet: '10.1.0.0' }]] },
      { ranges: [[{}]] },
      { ranges: [] },
      { ranges: [[]] },
      { subnet: 'nonsense' },
      { ranges: [[{ subnet: '10.1.0.0/24', rangeStart: '10.2.0.1' }]] },
      { ranges: [[{ subnet: '10.1.0.0/24', rangeEnd: '10.1.0.300' }]] },
      { ranges: [[{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.9', rangeEnd: '10.1.0.5' }]] },
      { ranges: [[{ subnet: '10.1.0.0/24', gateway: 'x' }]] },
      { ranges: [[{ subnet: '10.1.0.0/24' }]], routes: [{ dst: '10.0.0.0' }] },
      { ranges: [[{ subnet: '10.1.0.0/24' }]], routes: {} },
    ];
    for (const section of bad) {
      assert.throws(
        () => net(section),
        (e: unknown) => e instanceof CniError && e.code === Code.InvalidConfig,
        JSON.stringify(section),
      );
    }
  });

  it('the old single-range form still works', async () => {
    const c = net({ subnet: '10.5.0.0/24', rangeStart: '10.5.0.10', rangeEnd: '10.5.0.20', gateway: '10.5.0.1' });
    assert.equal(await addr(c, 'a'), '10.5.0.10/24');
  });

  it('reads the range from subnet.env when none is given; a missing file is code 50', async () => {
    const file = join(root, 'subnet.env');
    writeFileSync(file, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    const c = net({ subnetFile: file });
    const r = await allocate(c, att('a'));
    assert.deepEqual(r.ips, [{ address: '10.244.7.2/24', gateway: '10.244.7.1' }]);
    assert.deepEqual(r.routes, [{ dst: '10.244.0.0/16' }]);
    assert.throws(
      () => net({ subnetFile: join(root, 'missing.env') }),
      (e: unknown) => e instanceof CniError && e.code === Code.NotAvailable,
    );
    writeFileSync(join(root, 'bad.env'), 'FLANNEL_NETWORK=10.244.0.0/16\n');
    assert.throws(
      () => net({ subnetFile: join(root, 'bad.env') }),
      (e: unknown) => e instanceof CniError && e.code === Code.NotAvailable,
    );
  });
});
