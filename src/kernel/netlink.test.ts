/**
 * The rtnetlink executor against the real kernel (needs root). Every namespace is a Topology's own;
 * the root namespace is never touched, and after every call the main thread must be back in the
 * namespace it started in. Most checks run an op sequence twice, through netlink in one pair of
 * namespaces and through `ip -j -batch -` in a twin pair, and compare what each left and reported.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { Topology } from '../testing/topo.js';
import { inNetns, KernelError, run, type Netns } from './exec.js';
import { applyNetlink, NetlinkError, NetlinkSession, supported } from './netlink.js';
import { addrs, links, routes, type Link } from './state.js';

// ---- helpers ------------------------------------------------------------------------------------

const threadNs = (): string => {
  const s = statSync('/proc/thread-self/ns/net');
  return `${s.dev}:${s.ino}`;
};
const HOME = threadNs();

function assertHome(): void {
  assert.equal(threadNs(), HOME, 'the main thread was left in another network namespace');
}

/** applyNetlink, then the thread must be home, whatever happened. */
async function nl(ns: Netns, cmds: string[][]): Promise<string> {
  try {
    return await applyNetlink(ns, cmds);
  } finally {
    assertHome();
  }
}

/**
 * A word as `ip -batch` reads it (makeargs in iproute2's utils.c): bare, or inside '...' or "..."
 * with no escapes at all, so a word cannot hold both kinds of quote.
 */
function batchQuote(word: string): string {
  if (/^[^\s"'#]+$/.test(word)) return word;
  const q = word.includes('"') ? "'" : '"';
  assert.ok(!word.includes(q) && !word.includes('#'), `ip -batch cannot take the word ${word}`);
  return `${q}${word}${q}`;
}

async function ipBatch(ns: Netns, cmds: string[][]): Promise<string> {
  const script = cmds.map((c) => c.map(batchQuote).join(' ')).join('\n') + '\n';
  return (await run(inNetns(ns, 'ip', ['-j', '-batch', '-']), script)).stdout;
}

interface Outcome {
  ok: boolean;
  out: string;
  line?: number;
  exists?: boolean;
  notFound?: boolean;
  text?: string;
}

async function outcome(f: () => Promise<string>): Promise<Outcome> {
  try {
    return { ok: true, out: await f() };
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
    const text = e.stderr
      .split('\n')
      .filter((l) => l.trim() !== '' && !/^Command failed/.test(l))
      .join('; ');
    return { ok: false, out: e.stdout, line: e.line, exists: e.exists, notFound: e.notFound, text };
  }
}

const TRANSIENT_FLAGS = new Set(['LOWER_UP', 'NO-CARRIER', 'M-DOWN']);

/** What a namespace holds, without what only timing decides (carrier, DAD). */
async function snapshot(ns: Netns) {
  const ls = (await links(ns)).map((l: Link) => ({
    ifindex: l.ifindex,
    ifname: l.ifname,
    address: l.address,
    mtu: l.mtu,
    flags: l.flags.filter((f) => !TRANSIENT_FLAGS.has(f)),
    master: l.master,
    ifalias: l.ifalias,
    link_netnsid: l.link_netnsid,
    kind: l.linkinfo?.info_kind,
    slaveKind: l.linkinfo?.info_slave_kind,
    hairpin: l.linkinfo?.info_slave_data?.hairpin,
  }));
  const as = (await addrs(ns)).map((l) => ({
    ifname: l.ifname,
    addrs: l.addr_info.map((a) => {
      const x = a as unknown as Record<string, unknown>;
      return { family: x.family, local: x.local, prefixlen: x.prefixlen, scope: x.scope, broadcast: x.broadcast, label: x.label };
    }),
  }));
  return { links: ls, addrs: as, routes4: await routes(ns, '-4'), routes6: await routes(ns, '-6') };
}

/** Runs `cmds` via netlink in `a` and `cmdsB` via ip in `b`; both must end the same way. */
async function twin(a: Netns, b: Netns, cmds: string[][], cmdsB = cmds): Promise<{ viaNetlink: Outcome; viaIp: Outcome }> {
  const viaNetlink = await outcome(() => nl(a, cmds));
  const viaIp = await outcome(() => ipBatch(b, cmdsB));
  assert.equal(viaNetlink.ok, viaIp.ok, `success differs: netlink ${JSON.stringify(viaNetlink)} vs ip ${JSON.stringify(viaIp)}`);
  assert.equal(viaNetlink.exists, viaIp.exists, `exists differs: ${viaNetlink.text} vs ${viaIp.text}`);
  assert.equal(viaNetlink.notFound, viaIp.notFound, `notFound differs: ${viaNetlink.text} vs ${viaIp.text}`);
  assert.equal(viaNetlink.text, viaIp.text);
  assert.equal(viaNetlink.out, viaIp.out);
  // iproute2 exits without a line number on argument errors; netlink always names the op.
  if (viaIp.line !== undefined) assert.equal(viaNetlink.line, viaIp.line);
  return { viaNetlink, viaIp };
}

const rootLinks = () =>
  (JSON.parse(spawnSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' }).stdout) as Link[]).map((l) => `${l.ifindex} ${l.ifname} ${l.address} ${l.mtu} ${l.master ?? ''}`);

// ---- no kernel needed ---------------------------------------------------------------------------

describe('netlink: supported()', () => {
  it('accepts the CNI hot path ops', () => {
    const yes = [
      ['link', 'add', 'name', 'cni0', 'address', '0a:58:0a:f4:00:01', 'mtu', '1450', 'type', 'bridge'],
      ['link', 'add', 'name', 'cni0', 'type', 'bridge'],
      ['link', 'add', 'name', 'veth0123abcd', 'mtu', '1450', 'address', '0a:00:00:00:00:01', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1450', 'address', '0a:00:00:00:00:02', 'netns', '/var/run/netns/x'],
      ['link', 'add', 'name', 'veth0123abcd', 'address', '0a:00:00:00:00:01', 'type', 'veth', 'peer', 'name', 'eth0', 'address', '0a:00:00:00:00:02', 'netns', '/proc/1/ns/net'],
      ['link', 'add', 'name', 'va', 'type', 'veth'],
      ['link', 'set', 'cni0', 'up'],
      ['link', 'set', 'veth0123abcd', 'master', 'cni0', 'alias', 'weft:net:id:eth0', 'up'],
      ['link', 'set', 'dev', 'x', 'mtu', '1400', 'nomaster', 'down'],
      ['link', 'set', 'dev', 'veth0123abcd', 'type', 'bridge_slave', 'hairpin', 'on'],
      ['link', 'del', 'veth0123abcd'],
      ['link', 'delete', 'dev', 'veth0123abcd'],
      ['link', 'show', 'dev', 'cni0'],
      ['addr', 'add', '10.244.1.5/24', 'dev', 'eth0'],
      ['addr', 'replace', '10.244.1.1/24', 'dev', 'cni0'],
      ['addr', 'add', 'fd00:1::5/64', 'dev', 'eth0'],
      ['route', 'add', '10.244.0.0/16', 'via', '10.244.1.1', 'dev', 'eth0'],
      ['route', 'add', '0.0.0.0/0', 'via', '10.244.1.1', 'dev', 'eth0'],
      ['route', 'add', 'default', 'via', 'fd00:1::1', 'dev', 'eth0'],
      ['route', 'add', '10.9.0.0/16', 'dev', 'eth0'],
    ];
    for (const op of yes) assert.ok(supported(op), op.join(' '));
  });

  it('leaves everything else to iproute2', () => {
    const no = [
      ['link', 'add', 'cni0', 'type', 'bridge'],
      ['link', 'add', 'name', 'v0', 'type', 'vxlan', 'id', '1'],
      ['link', 'add', 'name', 'cni0', 'type', 'bridge', 'vlan_filtering', '1'],
      ['link', 'add', 'name', 'cni0', 'mtu', '01400', 'type', 'bridge'],
      ['link', 'add', 'name', 'cni0', 'mtu', '1400', 'mtu', '1400', 'type', 'bridge'],
      ['link', 'add', 'name', 'cni0', 'address', '0a:58:0a:f4:00', 'type', 'bridge'],
      ['link', 'add', 'name', 'a-name-far-too-long', 'type', 'bridge'],
      ['link', 'add', 'name', 'v', 'type', 'veth', 'peer', 'name', 'p', 'up'],
      ['link', 'set', 'cni0'],
      ['link', 'set', 'cni0', 'up', 'up'],
      ['link', 'set', 'cni0', 'promisc', 'on'],
      ['link', 'set', 'dev', 'v', 'type', 'bridge_slave', 'learning', 'off'],
      ['link', 'show'],
      ['link', 'show', 'dev', 'a', 'b'],
      ['addr', 'add', '10.0.0.1', 'dev', 'eth0'],
      ['addr', 'add', '10.0.0.1/24', 'dev', 'eth0', 'label', 'eth0:1'],
      ['addr', 'add', '010.0.0.1/24', 'dev', 'eth0'],
      ['addr', 'add', '10.0.0.1/33', 'dev', 'eth0'],
      ['addr', 'del', '10.0.0.1/24', 'dev', 'eth0'],
      ['route', 'replace', '10.0.0.0/8', 'dev', 'eth0'],
      ['route', 'add', '10.0.0.0/8', 'via', 'fd00::1', 'dev', 'eth0'],
      ['route', 'add', '10.0.0.0/8', 'via', '10.0.0.1'],
      ['route', 'add', '10.0.0.0/8', 'dev', 'eth0', 'metric', '5'],
      ['route', 'add', 'fe80::/64', 'via', 'fe80::1%eth0', 'dev', 'eth0'],
      ['neigh', 'add', '10.0.0.1', 'lladdr', '0a:00:00:00:00:01', 'dev', 'eth0'],
    ];
    for (const op of no) assert.ok(!supported(op), op.join(' '));
  });

  it('refuses a list holding an unsupported op before changing anything', async () => {
    await assert.rejects(applyNetlink('/nonexistent', [['link', 'show', 'dev', 'lo'], ['link', 'show']]), /unsupported op: ip link show$/);
    assertHome();
  });
});

// ---- against the kernel -------------------------------------------------------------------------

describe('netlink: against the kernel', () => {
  let topo: Topology;
  let rootBefore: string[];
  // nh/nc: host and container changed through netlink; ih/ic: their twins, changed through ip.
  let nh: string;
  let nc: string;
  let ih: string;
  let ic: string;
  let scratch: string;
  let other: string;

  before(async () => {
    rootBefore = rootLinks();
    topo = await Topology.create();
    [nh, nc, ih, ic, scratch, other] = (await Promise.all(['nh', 'nc', 'ih', 'ic', 'scratch', 'other'].map((n) => topo.netns(n)))) as [string, string, string, string, string, string];
  });

  after(async () => {
    await topo?.destroy();
    assertHome();
    assert.deepEqual(rootLinks(), rootBefore, 'the root namespace changed');
  });

  const sameState = async () => {
    assert.deepEqual(await snapshot(nh), await snapshot(ih), 'host namespaces differ');
    assert.deepEqual(await snapshot(nc), await snapshot(ic), 'container namespaces differ');
  };

  const hostAdd = (veth: string, pod: string, ifname: string, n: number) => [
    ['link', 'add', 'name', veth, 'mtu', '1400', 'address', `0a:00:00:00:0${n}:01`, 'type', 'veth', 'peer', 'name', ifname, 'mtu', '1400', 'address', `0a:00:00:00:0${n}:02`, 'netns', pod],
  ];

  it('a CNI ADD host batch and container batch leave what ip -batch leaves', async () => {
    const host = (pod: string) => [
      ...hostAdd('veth00000001', pod, 'eth0', 1),
      ['link', 'add', 'name', 'cni0', 'address', '0a:58:0a:f4:01:01', 'mtu', '1400', 'type', 'bridge'],
      ['link', 'set', 'cni0', 'up'],
      ['addr', 'replace', '10.244.1.1/24', 'dev', 'cni0'],
      ['addr', 'replace', 'fd00:1::1/64', 'dev', 'cni0'],
      ['link', 'set', 'veth00000001', 'master', 'cni0', 'alias', 'weft:net:c1:eth0', 'up'],
      ['link', 'set', 'dev', 'veth00000001', 'type', 'bridge_slave', 'hairpin', 'on'],
      ['link', 'show', 'dev', 'cni0'],
    ];
    const container = [
      ['addr', 'add', '10.244.1.5/24', 'dev', 'eth0'],
      ['addr', 'add', 'fd00:1::5/64', 'dev', 'eth0'],
      ['link', 'set', 'eth0', 'up'],
      ['route', 'add', '10.244.0.0/16', 'via', '10.244.1.1', 'dev', 'eth0'],
      ['route', 'add', '0.0.0.0/0', 'via', '10.244.1.1', 'dev', 'eth0'],
      ['route', 'add', '10.99.0.0/16', 'dev', 'eth0'],
      ['route', 'add', 'fd00:2::/64', 'via', 'fd00:1::1', 'dev', 'eth0'],
      ['route', 'add', 'default', 'via', 'fd00:1::1', 'dev', 'eth0'],
    ];
    const shownNl = await nl(nh, host(nc));
    const shownIp = await ipBatch(ih, host(ic));
    assert.equal(shownNl, shownIp, 'link show printed differently');
    const bridge = (JSON.parse(shownNl.trim().split('\n').pop()!) as Link[])[0]!;
    assert.equal(bridge.address, '0a:58:0a:f4:01:01');
    assert.equal(await nl(nc, container), '');
    await ipBatch(ic, container);
    await sameState();

    const veth = (await links(nh)).find((l) => l.ifname === 'veth00000001')!;
    assert.equal(veth.master, 'cni0');
    assert.equal(veth.ifalias, 'weft:net:c1:eth0');
    assert.equal(veth.mtu, 1400);
    assert.equal(veth.linkinfo?.info_slave_data?.hairpin, true);
    assert.ok(veth.flags.includes('UP'));
    const [eth0] = await addrs(nc, 'eth0');
    assert.equal(eth0!.address, '0a:00:00:00:01:02');
    assert.ok(eth0!.flags.includes('UP'));
    const v4 = eth0!.addr_info.find((a) => a.family === 'inet')! as unknown as Record<string, unknown>;
    assert.deepEqual([v4.local, v4.prefixlen, v4.broadcast], ['10.244.1.5', 24, undefined], 'no broadcast, as iproute2');
    assert.ok(eth0!.addr_info.some((a) => a.local === 'fd00:1::5' && a.prefixlen === 64));
    const r4 = await routes(nc);
    assert.ok(r4.some((r) => r.dst === 'default' && r.gateway === '10.244.1.1' && r.dev === 'eth0'));
    assert.ok(r4.some((r) => r.dst === '10.99.0.0/16' && r.scope === 'link'));
    assert.ok((await routes(nc, '-6')).some((r) => r.dst === 'default' && r.gateway === 'fd00:1::1'));
  });

  it('creates a veth straight into another namespace, only its peer there', async () => {
    await twin(nh, ih, hostAdd('veth00000002', nc, 'eth1', 2), hostAdd('veth00000002', ic, 'eth1', 2));
    const host = (await links(nh)).find((l) => l.ifname === 'veth00000002')!;
    assert.equal(host.address, '0a:00:00:00:02:01');
    assert.equal(typeof host.link_netnsid, 'number');
    assert.ok(!(await links(nh)).some((l) => l.ifname === 'eth1'), 'the peer must not be in the host');
    const pod = (await links(nc)).find((l) => l.ifname === 'eth1')!;
    assert.equal(pod.address, '0a:00:00:00:02:02');
    assert.equal(pod.mtu, 1400);
    await sameState();
  });

  it('sets mtu, alias, down, nomaster, master and hairpin off', async () => {
    const cmds = [
      ['link', 'set', 'dev', 'veth00000002', 'mtu', '1300', 'alias', 'with "quotes" \\ and\ttab', 'down'],
      ['link', 'set', 'veth00000002', 'master', 'cni0', 'up'],
      ['link', 'set', 'dev', 'veth00000002', 'type', 'bridge_slave', 'hairpin', 'on'],
      ['link', 'set', 'dev', 'veth00000002', 'type', 'bridge_slave', 'hairpin', 'off'],
      ['link', 'set', 'veth00000001', 'nomaster'],
      ['link', 'set', 'veth00000001', 'master', 'cni0', 'address', '0a:00:00:00:01:09'],
      ['link', 'show', 'dev', 'veth00000002'],
    ];
    await twin(nh, ih, cmds);
    await sameState();
    const l = (await links(nh)).find((x) => x.ifname === 'veth00000002')!;
    assert.equal(l.mtu, 1300);
    assert.equal(l.ifalias, 'with "quotes" \\ and\ttab');
    assert.equal(l.master, 'cni0');
    assert.equal(l.linkinfo?.info_slave_data?.hairpin, false);
    assert.equal((await links(nh)).find((x) => x.ifname === 'veth00000001')!.address, '0a:00:00:00:01:09');
  });

  it('prints link show exactly as ip -j does', async () => {
    await ipBatch(scratch, [
      ['link', 'add', 'name', 'br0', 'address', '0a:00:00:00:0a:01', 'type', 'bridge'],
      ['link', 'add', 'name', 'va', 'type', 'veth', 'peer', 'name', 'vb'],
      ['link', 'set', 'va', 'master', 'br0', 'up'],
      ['link', 'add', 'name', 'vc', 'type', 'veth', 'peer', 'name', 'vd', 'netns', other],
      ['link', 'property', 'add', 'dev', 'vb', 'altname', 'vb-altname'],
    ]);
    await run(inNetns(scratch, 'ip', ['link', 'set', 'va', 'alias', `odd "alias" \\ with\ttab and 'quote' #</>`]));
    for (const dev of ['lo', 'br0', 'va', 'vb', 'vc', 'vb-altname']) {
      const mine = await nl(scratch, [['link', 'show', 'dev', dev]]);
      const theirs = (await run(inNetns(scratch, 'ip', ['-j', 'link', 'show', 'dev', dev]))).stdout;
      assert.equal(mine, theirs, dev);
    }
    const two = await nl(scratch, [['link', 'show', 'dev', 'lo'], ['link', 'show', 'dev', 'br0']]);
    assert.equal(two.split('\n').length, 3, 'one JSON array and newline per show, as ip -j -batch');
    assert.equal(await nl(other, [['link', 'show', 'dev', 'vd']]), (await run(inNetns(other, 'ip', ['-j', 'link', 'show', 'dev', 'vd']))).stdout);
  });

  it('adds, replaces and refuses addresses as iproute2 does', async () => {
    await twin(nc, ic, [['addr', 'add', '10.244.2.5/24', 'dev', 'eth1'], ['addr', 'add', 'fd00:9::5/64', 'dev', 'eth1'], ['addr', 'add', '127.1.0.1/8', 'dev', 'eth1']]);
    await twin(nh, ih, [['addr', 'replace', '10.244.1.1/24', 'dev', 'cni0'], ['addr', 'replace', '10.244.1.1/24', 'dev', 'cni0']]);
    const dup = await twin(nc, ic, [['addr', 'add', '10.244.2.5/24', 'dev', 'eth1']]);
    // iproute2 prints the kernel's extended ack here, so neither executor calls it `exists`.
    assert.equal(dup.viaNetlink.text, 'Error: ipv4: Address already assigned.');
    assert.equal(dup.viaNetlink.exists, false);
    await twin(nc, ic, [['addr', 'add', 'fd00:9::5/64', 'dev', 'eth1']]);
    await sameState();
    const lo = (await addrs(nc, 'eth1'))[0]!.addr_info.find((a) => a.local === '127.1.0.1') as unknown as Record<string, unknown>;
    assert.equal(lo.scope, 'host');
  });

  it('adds routes and refuses duplicates and bad gateways as iproute2 does', async () => {
    const ok = await twin(nc, ic, [
      ['link', 'set', 'eth1', 'up'],
      ['route', 'add', '10.50.0.0/16', 'via', '10.244.2.1', 'dev', 'eth1'],
      ['route', 'add', '10.60.0.0/16', 'dev', 'eth1'],
      ['route', 'add', 'fd00:8::/64', 'dev', 'eth1'],
    ]);
    assert.equal(ok.viaNetlink.ok, true, ok.viaNetlink.text);
    const dup = await twin(nc, ic, [['route', 'add', '10.50.0.0/16', 'via', '10.244.2.1', 'dev', 'eth1']]);
    assert.equal(dup.viaNetlink.exists, true);
    assert.equal(dup.viaNetlink.line, 1);
    const gw = await twin(nc, ic, [['route', 'add', '10.51.0.0/16', 'via', '10.1.2.3', 'dev', 'eth1']]);
    assert.match(gw.viaNetlink.text!, /^Error: Nexthop has invalid gateway\.$/);
    const hostBits = await twin(nc, ic, [['route', 'add', '10.52.0.1/16', 'dev', 'eth1']]);
    assert.equal(hostBits.viaNetlink.ok, false);
    await sameState();
  });

  it('reports missing devices as notFound, with the line, as iproute2 does', async () => {
    for (const cmds of [
      [['link', 'set', 'nope', 'up']],
      [['link', 'del', 'nope']],
      [['link', 'show', 'dev', 'nope']],
      [['link', 'set', 'dev', 'nope', 'type', 'bridge_slave', 'hairpin', 'on']],
      [['addr', 'add', '10.1.1.1/24', 'dev', 'nope']],
      [['route', 'add', '10.1.0.0/16', 'dev', 'nope']],
      [['link', 'show', 'dev', 'lo'], ['link', 'set', 'veth00000001', 'master', 'nope']],
    ]) {
      const r = await twin(nh, ih, cmds);
      assert.equal(r.viaNetlink.ok, false);
      assert.equal(r.viaNetlink.notFound, true, r.viaNetlink.text);
      assert.equal(r.viaNetlink.line, cmds.length, cmds.map((c) => c.join(' ')).join('; '));
    }
    await sameState();
  });

  it('reports exists, stops at the first failure and returns what was shown before it', async () => {
    const cmds = [
      ['link', 'show', 'dev', 'lo'],
      ['link', 'add', 'name', 'cni0', 'type', 'bridge'],
      ['link', 'set', 'cni0', 'alias', 'must-not-be-set'],
    ];
    const r = await twin(nh, ih, cmds);
    assert.equal(r.viaNetlink.exists, true);
    assert.equal(r.viaNetlink.line, 2);
    assert.match(r.viaNetlink.out, /^\[\{"ifindex":1,"ifname":"lo"/);
    assert.equal((await links(nh)).find((l) => l.ifname === 'cni0')!.ifalias, undefined);
    const e = await applyNetlink(nh, cmds).catch((x: unknown) => x);
    assertHome();
    assert.ok(e instanceof NetlinkError);
    assert.equal(e.errno, 17);
    assert.match(e.message, /ip link add name cni0 type bridge/);
    assert.match(e.message, /line 2/);
    // A veth whose peer name is taken in the container fails as a whole.
    const taken = await twin(nh, ih, hostAdd('veth00000003', nc, 'eth0', 3), hostAdd('veth00000003', ic, 'eth0', 3));
    assert.equal(taken.viaNetlink.exists, true);
    assert.equal(taken.viaNetlink.line, 1);
    await sameState();
  });

  it('fails like iproute2 on other kernel refusals and on a bad peer namespace', async () => {
    const notPort = await twin(nh, ih, [['link', 'set', 'dev', 'lo', 'type', 'bridge_slave', 'hairpin', 'on']]);
    assert.equal(notPort.viaNetlink.text, 'RTNETLINK answers: Operation not supported');
    const badNs = await twin(nh, ih, [['link', 'add', 'name', 'vethbad', 'type', 'veth', 'peer', 'name', 'x', 'netns', '/nonexistent/ns']]);
    assert.equal(badNs.viaNetlink.line, 1);
    await sameState();
  });

  it('deletes links, a veth taking its peer along', async () => {
    await twin(nh, ih, [['link', 'del', 'veth00000002'], ['link', 'delete', 'dev', 'cni0']]);
    assert.ok(!(await links(nc)).some((l) => l.ifname === 'eth1'));
    await sameState();
  });

  it('fails on a namespace that cannot be entered, without a line, and stays home', async () => {
    const missing = await outcome(() => nl('/run/netns/wt00000000-does-not-exist', [['link', 'del', 'x']]));
    assert.deepEqual([missing.ok, missing.notFound, missing.line], [false, true, undefined]);
    const notNs = join(topo.dir, 'not-a-namespace');
    writeFileSync(notNs, '');
    const bad = await outcome(() => nl(notNs, [['link', 'show', 'dev', 'lo']]));
    assert.equal(bad.ok, false);
    assert.equal(bad.line, undefined);
    assert.match(bad.text!, /Invalid argument/);
  });

  it('notices a thread moved to another namespace, moves it back and fails loudly', async () => {
    const libc = koffi.load('libc.so.6');
    const setns = libc.func('int setns(int fd, int nstype)');
    const back = openSync('/proc/thread-self/ns/net', 'r');
    const away = openSync(scratch, 'r');
    try {
      await nl(scratch, [['link', 'show', 'dev', 'lo']]);
      assert.equal(setns(away, 0x40000000), 0);
      assert.notEqual(threadNs(), HOME);
      await assert.rejects(applyNetlink(undefined, [['link', 'show', 'dev', 'lo']]), /left in another network namespace \(switched back\)/);
      assertHome();
    } finally {
      setns(back, 0x40000000);
      closeSync(back);
      closeSync(away);
    }
  });

  it('keeps one socket per namespace in a session, and sessions run side by side', async () => {
    const s = new NetlinkSession();
    try {
      await s.run(scratch, [['link', 'add', 'name', 'vs1', 'type', 'veth', 'peer', 'name', 'vs1p', 'netns', other]]);
      await s.run(other, [['link', 'set', 'vs1p', 'up']]);
      await s.run(scratch, [['link', 'set', 'vs1', 'up']]);
      assertHome();
    } finally {
      s.close();
    }
    assert.ok((await links(other)).find((l) => l.ifname === 'vs1p')!.flags.includes('UP'));
    const work = Array.from({ length: 6 }, (_, i) =>
      nl(i % 2 ? other : scratch, [
        ['link', 'add', 'name', `par${i}`, 'type', 'veth', 'peer', 'name', `par${i}p`, 'netns', i % 2 ? scratch : other],
        ['link', 'del', `par${i}`],
        ['link', 'show', 'dev', 'lo'],
      ]),
    );
    const shown = await Promise.all(work);
    assertHome();
    assert.ok(shown.every((s) => s.startsWith('[{"ifindex":1,')));
    assert.ok(![...(await links(other)), ...(await links(scratch))].some((l) => l.ifname.startsWith('par')));
    await nl(scratch, [['link', 'del', 'vs1']]);
  });

  it('works in the current namespace (ns undefined), run inside a test namespace', async () => {
    const mod = fileURLToPath(new URL('./netlink.js', import.meta.url));
    const code = `import(${JSON.stringify(mod)}).then(async (m) => { process.stdout.write(await m.applyNetlink(undefined, [['link','add','name','cur0','address','0a:00:00:00:0c:01','type','bridge'],['link','set','cur0','up'],['addr','add','10.9.9.1/24','dev','cur0'],['link','show','dev','cur0']])); }).catch((e) => { console.error(e); process.exit(1); });`;
    const r = await topo.exec('scratch', [process.execPath, '-e', code]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as Link[])[0]!.address, '0a:00:00:00:0c:01');
    const l = (await links(scratch)).find((x) => x.ifname === 'cur0')!;
    assert.ok(l.flags.includes('UP'));
    assert.ok((await addrs(scratch, 'cur0'))[0]!.addr_info.some((a) => a.local === '10.9.9.1'));
  });
});
