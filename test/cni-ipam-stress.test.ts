/**
 * weft-ipam under concurrency and crashes, GC and STATUS: 100 concurrent ADDs give 100 distinct
 * addresses (direct and served); ADDs killed with SIGKILL at random points never give one address
 * twice, and a DEL or GC afterwards reclaims what they held; GC keeps exactly the valid attachments.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { flockExclusive, funlock } from '../src/cni/ipam/flock.js';
import { CniLab, iface, ipOf, parseResult, reservations, sleep, type CniResult } from './cni-support.js';

let lab: CniLab;
let served: string;
let nosock: string;

before(async () => {
  lab = await CniLab.create();
  served = await lab.serve();
  nosock = join(lab.dir, 'nothing-listens.sock');
});
after(() => lab?.destroy());

/** Every reservation file belongs to one attachment, and no attachment holds two. */
function assertConsistent(dir: string): Map<string, string> {
  const files = reservations(dir);
  const owners = [...files.values()];
  assert.equal(new Set(owners).size, owners.length, `an attachment holds two addresses: ${JSON.stringify([...files])}`);
  return files;
}

describe('100 concurrent ADDs', () => {
  for (const mode of ['direct', 'served'] as const) {
    it(`weft-ipam, ${mode}: 100 distinct addresses, each in its owner's file`, async () => {
      const net = `conc-${mode}`;
      const conf = {
        cniVersion: '1.1.0',
        name: net,
        socket: mode === 'served' ? served : nosock,
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.60.0.0/24' }]] },
      };
      const ids = Array.from({ length: 100 }, (_, i) => `c${mode[0]}${i}`);
      const results = await Promise.all(ids.map((id) => lab.ok('weft-ipam', { command: 'ADD', containerId: id, netns: lab.hostPath, ifname: 'eth0' }, conf)));
      const ips = results.map((r) => ipOf(parseResult(r)));
      assert.equal(new Set(ips).size, 100, 'no address is handed out twice');
      const files = assertConsistent(join(lab.dataDir, net));
      assert.equal(files.size, 100);
      ids.forEach((id, i) => assert.equal(files.get(ips[i]!), `${id}\r\neth0`, `${ips[i]} belongs to ${id}`));
      await Promise.all(ids.map((id) => lab.ok('weft-ipam', { command: 'DEL', containerId: id, netns: lab.hostPath, ifname: 'eth0' }, conf)));
      assert.equal(reservations(join(lab.dataDir, net)).size, 0);
    });
  }

  it('weft-ipam, direct and served at once on one network: 60 distinct addresses', async () => {
    const net = 'conc-mixed';
    const conf = (socket: string) => ({
      cniVersion: '1.1.0',
      name: net,
      socket,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.60.1.0/24' }]] },
    });
    const ids = Array.from({ length: 60 }, (_, i) => `m${i}`);
    const results = await Promise.all(
      ids.map((id, i) => lab.ok('weft-ipam', { command: 'ADD', containerId: id, netns: lab.hostPath, ifname: 'eth0' }, conf(i % 2 ? served : nosock))),
    );
    const ips = results.map((r) => ipOf(parseResult(r)));
    assert.equal(new Set(ips).size, 60, 'the server and the direct processes share the lock');
    const files = assertConsistent(join(lab.dataDir, net));
    ids.forEach((id, i) => assert.equal(files.get(ips[i]!), `${id}\r\neth0`));
  });

  it('weft, served: 40 pods at once onto a bridge that does not exist yet', async () => {
    const net = 'conc-weft';
    const conf = {
      cniVersion: '1.0.0',
      name: net,
      type: 'weft',
      bridge: 'brconc',
      isGateway: true,
      ipMasq: true,
      socket: served,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.61.0.0/24' }]] },
    };
    const pods: { name: string; path: string }[] = [];
    for (let i = 0; i < 40; i++) pods.push(await lab.pod(`conc${i}`));
    const results = await Promise.all(pods.map((p) => lab.ok('weft', { command: 'ADD', containerId: p.name, netns: p.path, ifname: 'eth0' }, conf)));
    const ips = results.map((r) => ipOf(parseResult(r)));
    assert.equal(new Set(ips).size, 40);
    const veths = (await lab.hostLinks()).filter((l) => l.master === 'brconc');
    assert.equal(veths.length, 40, 'every veth is on the one bridge');
    assert.deepEqual(await lab.masqAddrs(), [...ips].sort(), 'every pod is in the masquerade set');
    assert.equal((await lab.nftRuleset()).match(/masquerade/g)?.length, 1, 'the masquerade rule is written once');
    await Promise.all(
      pods.map((p, i) => lab.ok('weft', { command: 'DEL', containerId: p.name, netns: p.path, ifname: 'eth0' }, { ...conf, prevResult: results[i] })),
    );
    assert.equal((await lab.hostLinks()).filter((l) => l.master === 'brconc').length, 0);
    assert.equal(reservations(join(lab.dataDir, net)).size, 0);
    assert.deepEqual(await lab.masqAddrs(), [], 'every pod left the masquerade set');
  });
});

interface Outcome {
  id: string;
  killed: boolean;
  code: number | null;
  stdout: string;
  ms: number;
}

/**
 * Starts `count` direct-path ADDs of `plugin` at once; every other one is killed with SIGKILL after a
 * random delay of up to `maxDelayMs` (if it has not finished by then). With `gate`, the delays count
 * from when `gate` resolves (the test holds the IPAM lock until then). Resolves when all have ended.
 */
function killRound(
  plugin: string,
  count: number,
  prefix: string,
  conf: object,
  netns: (i: number) => string,
  maxDelayMs: number,
  gate?: Promise<void>,
): Promise<Outcome[]> {
  return Promise.all(
    Array.from({ length: count }, (_, i) => {
      const id = `${prefix}-${i}`;
      const child = spawn('ip', ['netns', 'exec', lab.topo.name('host'), join(lab.binDir, plugin)], {
        env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_NETNS: netns(i), CNI_IFNAME: 'eth0', CNI_PATH: lab.cniPath },
        stdio: ['pipe', 'pipe', 'ignore'],
      });
      let stdout = '';
      const started = performance.now();
      pids.set(id, child.pid!);
      if (i % 2 === 1) candidates.add(child.pid!);
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stdin.on('error', () => undefined);
      child.stdin.end(JSON.stringify(conf));
      let timer: NodeJS.Timeout | undefined;
      if (i % 2 === 1 && maxDelayMs > 0)
        void (gate ?? Promise.resolve()).then(() => (timer = setTimeout(() => child.kill('SIGKILL'), Math.random() * maxDelayMs)));
      const hardStop = setTimeout(() => child.kill('SIGKILL'), 30_000);
      return new Promise<Outcome>((resolve) => {
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          clearTimeout(hardStop);
          pids.delete(id);
          candidates.delete(child.pid!);
          resolve({ id, killed: signal === 'SIGKILL', code, stdout, ms: performance.now() - started });
        });
      });
    }),
  );
}

/** Holds the network's IPAM lock (as host-local and weft-ipam take it) until the returned release runs. */
async function holdLock(dir: string): Promise<() => void> {
  mkdirSync(dir, { recursive: true });
  const fd = openSync(join(dir, 'lock'), 'a');
  await flockExclusive(fd);
  return () => {
    funlock(fd);
    closeSync(fd);
  };
}

/**
 * Kills inside the critical section: watches the data dir (inotify) and, on each file event of a
 * writer (its temp file, named by its pid, or the reservation that names its container), kills it
 * with `probability`, at once or after a random delay of up to `maxDelayMs` (to land in the
 * work that follows the reservation). Returns a stop function.
 */
function killOnWrites(dir: string, prefix: string, maxDelayMs = 0, probability = 0.5): () => void {
  mkdirSync(dir, { recursive: true });
  const watcher = watch(dir, (_event, name) => {
    if (!name || Math.random() >= probability) return;
    let pid: number | undefined;
    const temp = /^\.weft-tmp-(\d+)-/.exec(name);
    if (temp) pid = Number(temp[1]);
    else if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) {
      try {
        const id = readFileSync(join(dir, name), 'utf8').split('\r\n')[0]!;
        // Only the odd-numbered ADDs of this round are fair game.
        if (id.startsWith(`${prefix}-`) && Number(id.slice(prefix.length + 1)) % 2 === 1) pid = pids.get(id);
      } catch {
        // already released
      }
    }
    if (pid === undefined || !candidates.has(pid)) return;
    const kill = (p: number) => {
      try {
        if (candidates.has(p)) process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    if (maxDelayMs === 0) kill(pid);
    else setTimeout(kill, Math.random() * maxDelayMs, pid);
  });
  return () => watcher.close();
}

/** The pids of this round's ADDs by container ID, and those that may be killed. */
const pids = new Map<string, number>();
const candidates = new Set<number>();

describe('kill -9 during ADD', () => {
  it('weft-ipam: never a duplicate; DEL and GC reclaim what the killed held', async (t) => {
    const net = 'killipam';
    const dir = join(lab.dataDir, net);
    const conf = { cniVersion: '1.1.0', name: net, socket: nosock, ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.62.0.0/24' }]] } };
    const done: Outcome[] = [];
    const killed: Outcome[] = [];
    // Kills at random times over the whole life of an ADD (exec, Node's start, the reservation);
    // then, with all of them queued on the lock, kills while they take turns in the critical section;
    // then kills triggered by their own writes in the data dir.
    let span = 1000;
    for (let round = 0; round < 6; round++) {
      let outcomes: Outcome[];
      if (round < 2) {
        outcomes = await killRound('weft-ipam', 16, `k${round}`, conf, () => lab.hostPath, span);
        span = Math.max(200, Math.min(3000, 1.1 * Math.max(...outcomes.filter((o) => !o.killed).map((o) => o.ms))));
      } else if (round < 4) {
        const release = await holdLock(dir);
        const gate = sleep(1500).then(release);
        outcomes = await killRound('weft-ipam', 16, `k${round}`, conf, () => lab.hostPath, 60, gate);
      } else {
        const stop = killOnWrites(dir, `k${round}`);
        outcomes = await killRound('weft-ipam', 16, `k${round}`, conf, () => lab.hostPath, 0).finally(stop);
      }
      for (const o of outcomes) {
        if (o.killed) killed.push(o);
        else {
          assert.equal(o.code, 0, `${o.id}: ${o.stdout}`);
          done.push(o);
        }
      }
      const files = assertConsistent(dir);
      const ips = done.map((o) => ipOf(parseResult(JSON.parse(o.stdout))));
      assert.equal(new Set(ips).size, ips.length, `round ${round}: an address was handed out twice`);
      done.forEach((o, i) => assert.equal(files.get(ips[i]!), `${o.id}\r\neth0`, `${ips[i]} is still ${o.id}'s`));
    }
    assert.ok(killed.length >= 10, `enough were killed (${killed.length})`);
    const ownersOf = () => new Set([...reservations(dir).values()].map((v) => v.split('\r\n')[0]));
    const leaked = killed.filter((o) => ownersOf().has(o.id));
    t.diagnostic(`${killed.length} killed, ${leaked.length} of them after reserving, ${done.length} completed`);
    assert.ok(leaked.length >= 1, 'some ADD was killed while holding an address');

    // DEL reclaims half of what the killed ones held, GC the rest.
    const byDel = leaked.slice(0, Math.ceil(leaked.length / 2));
    for (const o of byDel) await lab.ok('weft-ipam', { command: 'DEL', containerId: o.id, netns: lab.hostPath, ifname: 'eth0' }, conf);
    for (const o of byDel) assert.ok(!ownersOf().has(o.id), `DEL freed ${o.id}`);
    const valid = done.map((o) => ({ containerID: o.id, ifname: 'eth0' }));
    await lab.ok('weft-ipam', { command: 'GC' }, { ...conf, 'cni.dev/valid-attachments': valid });
    assert.deepEqual([...ownersOf()].sort(), done.map((o) => o.id).sort(), 'only the completed ADDs hold addresses');
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('.')),
      [],
      'no temp file of a killed writer is left',
    );
    // The range still works after all that.
    const next = parseResult(await lab.ok('weft-ipam', { command: 'ADD', containerId: 'after', netns: lab.hostPath, ifname: 'eth0' }, conf));
    assert.ok(!done.some((o) => ipOf(parseResult(JSON.parse(o.stdout))) === ipOf(next)));
  });

  it('weft: GC removes the veths, addresses and masquerade of killed ADDs; DEL of one works too', async (t) => {
    const net = 'killweft';
    const dir = join(lab.dataDir, net);
    const conf = {
      cniVersion: '1.1.0',
      name: net,
      type: 'weft',
      bridge: 'brkill',
      isGateway: true,
      ipMasq: true,
      socket: nosock,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.63.0.0/24' }]] },
    };
    const pods: { name: string; path: string }[] = [];
    for (let i = 0; i < 16; i++) pods.push(await lab.pod(`kw${i}`));
    // Half the rounds kill at random times across the whole ADD, half right after the reservation
    // appears, within the kernel work that follows.
    const outcomes: Outcome[] = [];
    for (let round = 0; round < 2; round++) {
      const group = pods.slice(round * 8, round * 8 + 8);
      if (round === 0) outcomes.push(...(await killRound('weft', 8, 'kwa', conf, (i) => group[i]!.path, 1200)));
      else {
        const stop = killOnWrites(dir, 'kwb', 20, 1);
        outcomes.push(...(await killRound('weft', 8, 'kwb', conf, (i) => group[i]!.path, 0).finally(stop)));
      }
    }
    const podOf = (o: Outcome) => pods[outcomes.indexOf(o)]!;
    const done = outcomes.filter((o) => !o.killed);
    for (const o of done) assert.equal(o.code, 0, `${o.id}: ${o.stdout}`);
    const killed = outcomes.filter((o) => o.killed);
    const ours = async () => (await lab.hostVeths()).filter((l) => l.master === 'brkill' || l.ifalias?.startsWith(`weft:${net}:`) || !l.ifalias);
    const leftVeths = (await ours()).length - done.length;
    const leftAddrs = reservations(dir).size - done.length;
    t.diagnostic(`${killed.length} killed (${leftVeths} left a veth, ${leftAddrs} an address), ${done.length} completed`);
    assert.ok(leftAddrs >= 1, 'some ADD was killed while holding an address');
    const ips = done.map((o) => ipOf(parseResult(JSON.parse(o.stdout))));
    assert.equal(new Set(ips).size, ips.length);
    assertConsistent(dir);

    // One killed ADD is reclaimed by its DEL, the rest by GC.
    const [first, ...rest] = killed;
    if (first) {
      await lab.ok('weft', { command: 'DEL', containerId: first.id, netns: podOf(first).path, ifname: 'eth0' }, conf);
      assert.ok(![...reservations(dir).values()].some((v) => v.startsWith(`${first.id}\r\n`)));
    }
    await lab.ok('weft', { command: 'GC' }, { ...conf, 'cni.dev/valid-attachments': done.map((o) => ({ containerID: o.id, ifname: 'eth0' })) });
    const files = reservations(dir);
    assert.deepEqual([...files.values()].sort(), done.map((o) => `${o.id}\r\neth0`).sort());
    const onBridge = (await lab.hostLinks()).filter((l) => l.master === 'brkill' || l.ifalias?.startsWith(`weft:${net}:`));
    assert.deepEqual(onBridge.map((l) => l.ifalias).sort(), done.map((o) => `weft:${net}:${o.id}:eth0`).sort(), 'only the completed pods keep a veth');
    const orphans = (await lab.hostVeths()).filter((l) => !l.ifalias);
    assert.deepEqual(orphans, [], 'no veth without an owner');
    for (const o of rest) {
      const podLinks = await lab.podAddrs(podOf(o).path);
      assert.deepEqual(
        podLinks.map((l) => l.ifname),
        ['lo'],
        `${o.id}'s pod end went with its host veth`,
      );
    }
    assert.deepEqual(await lab.masqAddrs(), [...ips].sort(), 'the masquerade set holds the completed pods only');
    for (const o of done) await lab.ok('weft', { command: 'DEL', containerId: o.id, netns: podOf(o).path, ifname: 'eth0' }, conf);
    assert.equal(reservations(dir).size, 0);
  });
});

describe('GC', () => {
  for (const key of ['cni.dev/valid-attachments', 'cni.dev/attachments']) {
    it(`frees every attachment ${key} does not name, with its host veth`, async () => {
      const net = key.includes('valid') ? 'gcnew' : 'gcold';
      const third = key.includes('valid') ? 1 : 2;
      const conf = {
        cniVersion: '1.1.0',
        name: net,
        type: 'weft',
        bridge: `br${net}`,
        isGateway: true,
        ipMasq: true,
        socket: served,
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: `10.64.${third}.0/24` }]] },
      };
      const pods: { name: string; path: string }[] = [];
      const results: CniResult[] = [];
      for (let i = 0; i < 4; i++) {
        const p = await lab.pod(`${net}${i}`);
        pods.push(p);
        results.push(parseResult(await lab.ok('weft', { command: 'ADD', containerId: `${net}-${i}`, netns: p.path, ifname: 'eth0' }, conf)));
      }
      // A reservation of another network in the same data dir is not this GC's business.
      const other = join(lab.dataDir, `${net}-other`);
      await lab.ok(
        'weft-ipam',
        { command: 'ADD', containerId: 'other', netns: lab.hostPath, ifname: 'eth0' },
        {
          cniVersion: '1.1.0',
          name: `${net}-other`,
          socket: served,
          ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: `10.64.${third}.0/24` }]] },
        },
      );
      await lab.ok('weft', { command: 'GC' }, { ...conf, [key]: [0, 2].map((i) => ({ containerID: `${net}-${i}`, ifname: 'eth0' })) });

      const files = reservations(join(lab.dataDir, net));
      assert.deepEqual([...files.values()].sort(), [`${net}-0\r\neth0`, `${net}-2\r\neth0`]);
      assert.equal(reservations(other).size, 1);
      for (const i of [1, 3]) {
        assert.equal(
          (await lab.hostLinks()).find((l) => l.ifname === iface(results[i]!, 1).name),
          undefined,
          `${net}-${i}'s veth is gone`,
        );
        assert.ok(!(await lab.masqAddrs()).includes(ipOf(results[i]!)), 'and its masquerade element');
      }
      for (const i of [0, 2])
        await lab.ok(
          'weft',
          { command: 'CHECK', containerId: `${net}-${i}`, netns: pods[i]!.path, ifname: 'eth0' },
          { ...conf, cniVersion: '1.1.0', prevResult: results[i] },
        );
      // Nothing valid: everything of the network goes.
      await lab.ok('weft', { command: 'GC' }, { ...conf, [key]: [] });
      assert.equal(reservations(join(lab.dataDir, net)).size, 0);
      assert.equal((await lab.hostLinks()).filter((l) => l.master === `br${net}`).length, 0);
    });
  }

  it('weft cni gc keeps what the runtime cache names', async () => {
    const p = await lab.pod('gccli');
    const q = await lab.pod('gccli2');
    const list = lab.writeConf('gccli', {
      cniVersion: '1.1.0',
      name: 'gccli',
      plugins: [{ type: 'weft', bridge: 'brgccli', socket: served, ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.64.3.0/24' }]] } }],
    });
    const common = ['--conf', list, '--cni-path', lab.cniPath, '--cache-dir', lab.cacheDir];
    const add = await lab.weft(['cni', 'add', ...common, '--container-id', 'kept', p.path]);
    assert.equal(add.code, 0, add.stderr);
    // An attachment the runtime forgot: made behind its back, not in its cache.
    await lab.ok(
      'weft',
      { command: 'ADD', containerId: 'forgotten', netns: q.path, ifname: 'eth0' },
      {
        cniVersion: '1.1.0',
        name: 'gccli',
        type: 'weft',
        bridge: 'brgccli',
        socket: served,
        ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.64.3.0/24' }]] },
      },
    );
    const gc = await lab.weft(['cni', 'gc', ...common]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.deepEqual([...reservations(join(lab.dataDir, 'gccli')).values()], ['kept\r\neth0']);
    assert.deepEqual(
      (await lab.hostLinks()).filter((l) => l.master === 'brgccli').map((l) => l.ifalias),
      ['weft:gccli:kept:eth0'],
    );
    const del = await lab.weft(['cni', 'del', ...common, '--container-id', 'kept', p.path]);
    assert.equal(del.code, 0, del.stderr);
  });
});

describe('STATUS', () => {
  it('is 0 when ADD can succeed and 50 when the subnet file is missing or the range is full', async () => {
    const file = join(lab.dir, 'status.env');
    writeFileSync(file, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.20.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    for (const socket of [nosock, served]) {
      const weft = { cniVersion: '1.1.0', name: 'status', type: 'weft', subnetFile: file, dataDir: lab.dataDir, socket };
      const ipam = { cniVersion: '1.1.0', name: 'status', socket, ipam: { type: 'weft-ipam', dataDir: lab.dataDir, subnetFile: file } };
      await lab.ok('weft', { command: 'STATUS' }, weft);
      await lab.ok('weft-ipam', { command: 'STATUS' }, ipam);
      rmSync(file);
      assert.ok(!existsSync(file));
      await lab.fails('weft', { command: 'STATUS' }, weft, 50, /status\.env/);
      await lab.fails('weft-ipam', { command: 'STATUS' }, ipam, 50, /status\.env/);
      writeFileSync(file, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.20.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
      await lab.fails('weft', { command: 'STATUS' }, { ...weft, cniVersion: '1.0.0' }, 1);
    }
    const tiny = {
      cniVersion: '1.1.0',
      name: 'statusfull',
      type: 'weft',
      socket: served,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: '10.65.0.0/30' }]] },
    };
    await lab.ok('weft', { command: 'STATUS' }, tiny);
    await lab.ok('weft-ipam', { command: 'ADD', containerId: 'only', netns: lab.hostPath, ifname: 'eth0' }, tiny);
    await lab.fails('weft', { command: 'STATUS' }, tiny, 50, /10\.65\.0\.0\/30/);
    await lab.fails('weft', { command: 'STATUS' }, { ...tiny, ipam: { type: 'no-such-ipam' } }, 50, /no-such-ipam/);
  });
});
