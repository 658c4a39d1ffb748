/**
 * Interoperability with the reference plugins (issue 2): weft over host-local, weft chained before
 * portmap and tuning through `weft cni add|check|del` (libcni's way), weft-ipam and host-local sharing
 * one data dir in both directions, and a weft pod talking to a reference bridge pod on one bridge.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '../src/util/wait.js';
import { CniLab, iface, ipOf, parseResult, reservations, type CniResult } from './cni-support.js';

let lab: CniLab;
let nosock: string;

before(async () => {
  lab = await CniLab.create();
  nosock = join(lab.dir, 'nothing-listens.sock');
});
after(() => lab?.destroy());

const linkOf = async (name: string) => (await lab.hostLinks()).find((l) => l.ifname === name);

describe('weft with the reference host-local as IPAM', () => {
  it('ADD, CHECK and DEL go through host-local and its files', async () => {
    const pod = await lab.pod('hl');
    const c = {
      cniVersion: '1.0.0',
      name: 'hl',
      type: 'weft',
      bridge: 'brhl',
      isGateway: true,
      socket: nosock,
      ipam: { type: 'host-local', dataDir: lab.dataDir, ranges: [[{ subnet: '10.50.1.0/24' }]], routes: [{ dst: '10.50.0.0/16' }] },
    };
    const call = (command: string) => ({ command, containerId: 'hl-1', netns: pod.path, ifname: 'eth0' });
    const r = parseResult(await lab.ok('weft', call('ADD'), c));
    assert.deepEqual(r.ips, [{ address: '10.50.1.2/24', gateway: '10.50.1.1', interface: 2 }]);
    assert.deepEqual(r.routes, [{ dst: '10.50.0.0/16' }]);
    assert.equal(reservations(join(lab.dataDir, 'hl')).get('10.50.1.2'), 'hl-1\r\neth0');
    const routes = await lab.podRoutes(pod.path);
    assert.ok(routes.some((x) => x.dst === '10.50.0.0/16' && x.gateway === '10.50.1.1'));
    await lab.ok('weft', call('CHECK'), { ...c, prevResult: r });
    // host-local's CHECK sees the address gone from its files, and weft passes the failure on.
    writeFileSync(join(lab.dataDir, 'hl', '10.50.1.2'), 'someone-else\r\neth0');
    const bad = await lab.plugin('weft', call('CHECK'), { ...c, prevResult: r });
    assert.notEqual(bad.code, 0, 'CHECK fails when host-local does not hold the address');
    writeFileSync(join(lab.dataDir, 'hl', '10.50.1.2'), 'hl-1\r\neth0');
    await lab.ok('weft', call('DEL'), { ...c, prevResult: r });
    assert.equal(reservations(join(lab.dataDir, 'hl')).size, 0, 'host-local released it');
    assert.equal(await linkOf(iface(r, 1).name), undefined);
    await lab.ok('weft', call('DEL'), c);
  });

  it('DEL without prevResult still takes the pod out of the masquerade set', async () => {
    const pod = await lab.pod('hlmasq');
    const c = {
      cniVersion: '1.0.0',
      name: 'hlmasq',
      type: 'weft',
      bridge: 'brhlm',
      isGateway: true,
      ipMasq: true,
      socket: nosock,
      ipam: { type: 'host-local', dataDir: lab.dataDir, ranges: [[{ subnet: '10.50.2.0/24' }]] },
    };
    const call = (command: string) => ({ command, containerId: 'hlm-1', netns: pod.path, ifname: 'eth0' });
    await lab.ok('weft', call('ADD'), c);
    assert.deepEqual(await lab.masqAddrs(), ['10.50.2.2']);
    await lab.ok('weft', call('DEL'), c);
    assert.deepEqual(await lab.masqAddrs(), [], 'the element went with the pod');
    assert.equal(reservations(join(lab.dataDir, 'hlmasq')).size, 0);
  });
});

describe('GC with host-local as IPAM', () => {
  it('removes the host veths of attachments not named valid, though host-local cannot GC', async () => {
    const c = {
      cniVersion: '1.1.0',
      name: 'hlgc',
      type: 'weft',
      bridge: 'brhlgc',
      socket: nosock,
      ipam: { type: 'host-local', dataDir: lab.dataDir, ranges: [[{ subnet: '10.50.3.0/24' }]] },
    };
    const pods = [await lab.pod('gc1'), await lab.pod('gc2')];
    const results: CniResult[] = [];
    for (const [i, pod] of pods.entries()) {
      results.push(
        parseResult(await lab.ok('weft', { command: 'ADD', containerId: `gc-${i}`, netns: pod.path, ifname: 'eth0' }, { ...c, cniVersion: '1.0.0' })),
      );
    }
    await lab.ok('weft', { command: 'GC' }, { ...c, 'cni.dev/valid-attachments': [{ containerID: 'gc-0', ifname: 'eth0' }] });
    assert.ok(await linkOf(iface(results[0]!, 1).name), 'the valid attachment keeps its veth');
    assert.equal(await linkOf(iface(results[1]!, 1).name), undefined, 'the stale attachment lost its veth');
  });
});

describe('weft in a conflist with portmap and tuning, run like libcni', () => {
  it('ADD in order with prevResult, CHECK, DEL in reverse; portmap rules come and go', async () => {
    const pod = await lab.pod('pm');
    const log = join(lab.dir, 'trace.log');
    // A tiny pass-through plugin that records each call and what prevResult it got.
    const trace = join(lab.binDir, 'trace');
    writeFileSync(
      trace,
      `#!${process.execPath}
const fs = require('fs');
const conf = JSON.parse(fs.readFileSync(0, 'utf8'));
const ips = conf.prevResult ? (conf.prevResult.ips || []).map((i) => i.address).join(',') : '-';
fs.appendFileSync(conf.log, process.env.CNI_COMMAND + ' ' + conf.tag + ' ' + ips + '\\n');
if (process.env.CNI_COMMAND === 'ADD') process.stdout.write(JSON.stringify(conf.prevResult));
`,
    );
    chmodSync(trace, 0o755);
    const conflist = lab.writeConf('portmap', {
      cniVersion: '1.0.0',
      name: 'pm',
      plugins: [
        {
          type: 'weft',
          bridge: 'brpm',
          isGateway: true,
          socket: nosock,
          ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.51.1.0/24' }]] },
        },
        { type: 'trace', tag: 'a', log },
        { type: 'portmap', capabilities: { portMappings: true }, snat: true },
        { type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.accept_local': '1' } },
        { type: 'trace', tag: 'b', log },
      ],
    });
    const common = ['--conf', conflist, '--cni-path', lab.cniPath, '--cache-dir', lab.cacheDir, '--container-id', 'pm-1'];
    const caps = JSON.stringify({ portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] });

    const add = await lab.weft(['cni', 'add', ...common, '--capability-args', caps, pod.path]);
    assert.equal(add.code, 0, add.stderr);
    const result = parseResult(JSON.parse(add.stdout));
    assert.deepEqual(result.ips, [{ address: '10.51.1.2/24', gateway: '10.51.1.1', interface: 2 }]);
    assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), ['ADD a 10.51.1.2/24', 'ADD b 10.51.1.2/24'], 'each plugin got the previous result');
    const cache = join(lab.cacheDir, 'results', 'pm-pm-1-eth0');
    assert.ok(existsSync(cache), 'the result is cached like libcni');
    assert.deepEqual((JSON.parse(readFileSync(cache, 'utf8')) as { result: unknown }).result, result);

    const nat = await lab.topo.exec('host', ['iptables', '-t', 'nat', '-S']);
    assert.equal(nat.code, 0, nat.stderr);
    assert.match(nat.stdout, /--dport 18080 .*-j DNAT --to-destination 10\.51\.1\.2:80/, nat.stdout);
    const sysctl = await lab.topo.exec(pod.name, ['cat', '/proc/sys/net/ipv4/conf/eth0/accept_local']);
    assert.equal(sysctl.stdout.trim(), '1', 'tuning ran after weft on its interface');

    const check = await lab.weft(['cni', 'check', ...common, pod.path]);
    assert.equal(check.code, 0, check.stderr);

    writeFileSync(log, '');
    const del = await lab.weft(['cni', 'del', ...common, '--capability-args', caps, pod.path]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), ['DEL b 10.51.1.2/24', 'DEL a 10.51.1.2/24'], 'DEL runs in reverse, with the cached result');
    const natAfter = await lab.topo.exec('host', ['iptables', '-t', 'nat', '-S']);
    assert.doesNotMatch(natAfter.stdout, /10\.51\.1\.2/, 'portmap removed its rules');
    assert.equal(reservations(join(lab.dataDir, 'pm')).size, 0);
    assert.equal(await linkOf(iface(result, 1).name), undefined);
    assert.ok(!existsSync(cache), 'the cache entry is gone');
    const again = await lab.weft(['cni', 'del', ...common, pod.path]);
    assert.equal(again.code, 0, `DEL again: ${again.stderr}`);
  });
});

describe('weft followed by the reference bandwidth plugin', () => {
  it("shapes the pod through weft's host veth, and DEL removes the shaping", async () => {
    const pod = await lab.pod('bw');
    const conflist = lab.writeConf('bandwidth', {
      cniVersion: '1.0.0',
      name: 'bw',
      plugins: [
        {
          type: 'weft',
          bridge: 'brbw',
          isGateway: true,
          socket: nosock,
          ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.51.2.0/24' }]] },
        },
        { type: 'bandwidth', capabilities: { bandwidth: true } },
      ],
    });
    const common = ['--conf', conflist, '--cni-path', lab.cniPath, '--cache-dir', lab.cacheDir, '--container-id', 'bw-1'];
    const caps = JSON.stringify({ bandwidth: { ingressRate: 8_000_000, ingressBurst: 100_000, egressRate: 8_000_000, egressBurst: 100_000 } });
    const add = await lab.weft(['cni', 'add', ...common, '--capability-args', caps, pod.path]);
    assert.equal(add.code, 0, add.stderr);
    const hostVeth = iface(parseResult(JSON.parse(add.stdout)), 1).name;
    const qdisc = await lab.topo.exec('host', ['tc', 'qdisc', 'show', 'dev', hostVeth]);
    assert.match(qdisc.stdout, /tbf/, `bandwidth put a tbf on ${hostVeth}: ${qdisc.stdout}`);
    const ifbs = async () => (await lab.hostLinks()).filter((l) => l.linkinfo?.info_kind === 'ifb').map((l) => l.ifname);
    assert.equal((await ifbs()).length, 1, 'egress shaping goes through an ifb device');

    const del = await lab.weft(['cni', 'del', ...common, '--capability-args', caps, pod.path]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await ifbs(), [], 'DEL removed the ifb device');
    assert.equal(await linkOf(hostVeth), undefined);
  });
});

describe('weft-ipam and host-local share state', () => {
  const ipam = (type: string, net: string) => ({
    cniVersion: '1.0.0',
    name: net,
    ipam: { type, dataDir: lab.dataDir, ranges: [[{ subnet: '10.52.1.0/24' }]] },
  });
  const call = (command: string, id: string) => ({ command, containerId: id, netns: lab.hostPath, ifname: 'eth0' });
  const add = async (name: string, id: string, conf: object) => parseResult(await lab.ok(name, call('ADD', id), conf));

  it('weft-ipam allocates, host-local continues round robin and releases it', async () => {
    const dir = join(lab.dataDir, 'share1');
    const a = await add('weft-ipam', 'w-1', { ...ipam('weft-ipam', 'share1'), socket: nosock });
    const b = await add('weft-ipam', 'w-2', { ...ipam('weft-ipam', 'share1'), socket: nosock });
    assert.deepEqual([ipOf(a), ipOf(b)], ['10.52.1.2', '10.52.1.3']);
    const h = await add('host-local', 'h-1', ipam('host-local', 'share1'));
    assert.equal(ipOf(h), '10.52.1.4', "host-local reads weft-ipam's files and last_reserved_ip");
    await lab.ok('host-local', call('DEL', 'w-1'), ipam('host-local', 'share1'));
    assert.deepEqual([...reservations(dir).keys()].sort(), ['10.52.1.3', '10.52.1.4'], 'host-local released what weft-ipam reserved');
    await lab.ok('host-local', call('CHECK', 'w-2'), { ...ipam('host-local', 'share1'), prevResult: b });
  });

  it('host-local allocates, weft-ipam sees it taken and releases it', async () => {
    const dir = join(lab.dataDir, 'share2');
    const h = await add('host-local', 'h-1', ipam('host-local', 'share2'));
    assert.equal(ipOf(h), '10.52.1.2');
    const w = await add('weft-ipam', 'w-1', { ...ipam('weft-ipam', 'share2'), socket: nosock });
    assert.equal(ipOf(w), '10.52.1.3', 'weft-ipam skips the address host-local holds');
    await lab.ok('weft-ipam', call('CHECK', 'h-1'), { ...ipam('weft-ipam', 'share2'), socket: nosock, prevResult: h });
    await lab.ok('weft-ipam', call('DEL', 'h-1'), { ...ipam('weft-ipam', 'share2'), socket: nosock });
    assert.deepEqual([...reservations(dir).keys()], ['10.52.1.3']);
    const h2 = await add('host-local', 'h-2', ipam('host-local', 'share2'));
    assert.equal(ipOf(h2), '10.52.1.4', "host-local continues after weft-ipam's last reservation");
  });

  it('both at once under their shared lock: all addresses distinct', async () => {
    const dir = join(lab.dataDir, 'share3');
    const runs = [];
    for (let i = 0; i < 15; i++) {
      runs.push(add('host-local', `h-${i}`, ipam('host-local', 'share3')));
      runs.push(add('weft-ipam', `w-${i}`, { ...ipam('weft-ipam', 'share3'), socket: nosock }));
    }
    const got = (await Promise.all(runs)).map(ipOf);
    assert.equal(new Set(got).size, 30, `duplicates in ${got.join(' ')}`);
    const files = reservations(dir);
    assert.equal(files.size, 30);
    assert.equal(new Set(files.values()).size, 30, 'each file has its own owner');
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('.')),
      [],
      'no temp files left',
    );
  });
});

describe('a weft pod and a reference bridge pod on one bridge', () => {
  it('reach each other without NAT', async () => {
    const a = await lab.pod('mix-weft');
    const b = await lab.pod('mix-ref');
    const subnet = '10.53.1.0/24';
    const w = parseResult(
      await lab.ok(
        'weft',
        { command: 'ADD', containerId: 'mix-weft', netns: a.path, ifname: 'eth0' },
        {
          cniVersion: '1.0.0',
          name: 'mix',
          type: 'weft',
          bridge: 'brmix',
          isGateway: true,
          socket: nosock,
          ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet }]] },
        },
      ),
    );
    const r = parseResult(
      await lab.ok(
        'bridge',
        { command: 'ADD', containerId: 'mix-ref', netns: b.path, ifname: 'eth0' },
        {
          cniVersion: '1.0.0',
          name: 'mix',
          type: 'bridge',
          bridge: 'brmix',
          isGateway: true,
          ipam: { type: 'host-local', dataDir: lab.dataDir, ranges: [[{ subnet }]] },
        },
      ),
    );
    const ipW = ipOf(w);
    const ipR = ipOf(r);
    assert.notEqual(ipW, ipR);
    assert.equal((await lab.hostLinks()).filter((l) => l.master === 'brmix').length, 2, 'both veths are on brmix');

    // A TCP echo in one pod, a client in the other, each way; the server reports who connected.
    const server = (ip: string) =>
      `const s=require('net').createServer(c=>{c.on('data',d=>{c.end('pong '+c.remoteAddress+' '+d);s.close();});});s.listen(7777,'${ip}',()=>console.log('ready'));setTimeout(()=>process.exit(3),15000);`;
    const client = (ip: string) =>
      `const c=require('net').connect(7777,'${ip}',()=>c.write('ping'));let o='';c.on('data',d=>o+=d);c.on('end',()=>{console.log(o);process.exit(0)});c.on('error',e=>{console.error(e.message);process.exit(2)});setTimeout(()=>process.exit(4),5000);`;
    for (const [srv, srvIp, cli, cliIp] of [
      [a.name, ipW, b.name, ipR],
      [b.name, ipR, a.name, ipW],
    ] as const) {
      const child = lab.topo.spawn(srv, [process.execPath, '-e', server(srvIp)]);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(() => out.includes('ready'), { timeoutMs: 30_000, intervalMs: 25, what: `the server in ${srv} to start` });
      const res = await lab.topo.exec(cli, [process.execPath, '-e', client(srvIp)], { timeoutMs: 10_000 });
      assert.equal(res.code, 0, `${cli} -> ${srvIp}: ${res.stderr}`);
      assert.equal(res.stdout.trim(), `pong ${cliIp} ping`, "the server sees the client pod's own address");
    }

    await lab.ok(
      'weft',
      { command: 'DEL', containerId: 'mix-weft', netns: a.path, ifname: 'eth0' },
      {
        cniVersion: '1.0.0',
        name: 'mix',
        type: 'weft',
        bridge: 'brmix',
        socket: nosock,
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet }]] },
      },
    );
    await lab.ok(
      'bridge',
      { command: 'DEL', containerId: 'mix-ref', netns: b.path, ifname: 'eth0' },
      { cniVersion: '1.0.0', name: 'mix', type: 'bridge', bridge: 'brmix', ipam: { type: 'host-local', dataDir: lab.dataDir, ranges: [[{ subnet }]] } },
    );
    assert.equal(reservations(join(lab.dataDir, 'mix')).size, 0);
  });
});
