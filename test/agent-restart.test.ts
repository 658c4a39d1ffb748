/**
 * The agent across restarts and store loss: three vxlan nodes on an emulated underlay, a real etcd,
 * real agents, pods wired by the real CNI plugin.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Cluster, flannelDocConfig, NODE, PORT, TOOL, waitFor, WEFT, type Pod } from './agent-support.js';

/** 5 ms apart: the interval at which the old restart gap lost 5 of 3000. */
const EVERY_MS = 5;
const COUNT = 2400;

interface Probe {
  child: ChildProcess;
  sent: () => number;
  result: Promise<{ lost: number; seqs: string }>;
}

const keyOf = (subnet: string) => `subnets/${subnet.replace(/\.1\/(\d+)$/, '.0-$1')}`;

describe('agent restarts and etcd data loss', { timeout: 600_000 }, () => {
  let c: Cluster;
  let a1: Pod, b1: Pod, c1: Pod;
  let failed = false;

  before(async () => {
    c = await Cluster.create('vxlan');
    const init = await c.networkInit(flannelDocConfig('vxlan'));
    assert.equal(init.code, 0, init.stderr);
    for (const [i, n] of ['n1', 'n2', 'n3'].entries()) await c.addNode(n, i + 1);
    for (const n of ['n1', 'n2', 'n3']) c.startAgent(n);
    for (const n of ['n1', 'n2', 'n3']) await c.waitReady(n, 2);
    a1 = await c.addPod('a1', 'n1');
    b1 = await c.addPod('b1', 'n2');
    c1 = await c.addPod('c1', 'n3');
  });

  after(async () => {
    if ((failed || process.env.WEFT_TEST_SHOW_LOGS) && c) console.log(c.logs());
    await c?.destroy();
  });

  const check = (name: string, fn: () => Promise<void>, timeout = 180_000) =>
    void it(name, { timeout }, async () => {
      try {
        await fn();
      } catch (e) {
        failed = true;
        throw e;
      }
    });

  /** TCP until it answers; each try may take seconds to start a process on a loaded machine. */
  const reach = (from: Pod, to: Pod) => waitFor(`tcp ${from.name} → ${to.name}`, () => c.tcp(from.name, to.ip), 30_000, 200);

  /** COUNT numbered UDP datagrams from pod `from` to pod `to`, each echoed back: how many got no answer. */
  function probe(from: Pod, to: Pod): Probe {
    const child = c.spawn(from.name, [NODE, TOOL, 'probe', to.ip, String(PORT), String(COUNT), String(EVERY_MS)]);
    let sent = 0;
    let out = '';
    const result = new Promise<{ lost: number; seqs: string }>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        for (const m of out.matchAll(/sent (\d+)/g)) sent = Number(m[1]);
        const done = /lost (\d+) of \d+: (.*)\n/.exec(out);
        if (done) resolve({ lost: Number(done[1]), seqs: done[2]! });
      });
      child.once('close', (code) =>
        code === 0
          ? reject(new Error(`probe ${from.name} → ${to.name} ended without a result: ${out}`))
          : reject(new Error(`probe ${from.name} → ${to.name} exited ${code}: ${out}`)),
      );
    });
    result.catch(() => undefined);
    return { child, sent: () => sent, result };
  }

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    check(`an agent restart (${signal}) loses no packet at ${EVERY_MS} ms intervals, between other nodes or through it`, async () => {
      const logMark = c.node('n3').agent!.log.length;
      const probes = { 'a1 → b1 (other nodes)': probe(a1, b1), 'c1 → a1 (through n3)': probe(c1, a1), 'c1 → b1 (through n3)': probe(c1, b1) };
      const all = Object.values(probes);
      await waitFor('the probes to be under way', () => all.every((p) => p.sent() >= 100), 15_000);
      await c.stopAgent('n3', signal);
      c.startAgent('n3');
      await c.waitReady('n3', 2, 20_000);
      // The restart must fall inside the probes' window, or the test shows nothing.
      assert.ok(
        all.every((p) => p.sent() < COUNT),
        `the restart took longer than the probes ran (${all.map((p) => p.sent()).join(', ')} of ${COUNT} sent)`,
      );
      for (const [name, p] of Object.entries(probes)) {
        const r = await p.result;
        assert.equal(r.lost, 0, `${name}: lost ${r.lost} of ${COUNT} (seq ${r.seqs})\n${c.node('n3').agent!.log.slice(logMark).join('\n')}`);
      }
      // The first reconcile after the restart found the kernel as it should be: nothing removed.
      const restarted = c.node('n3').agent!.log;
      assert.ok(!restarted.some((l) => /remove stale (route|neighbour|fdb)/.test(l)), restarted.join('\n'));
    });
  }

  check('etcd loses its data under running agents: every lease is back within 30 s, traffic passes, and a node joining later gets a fresh subnet', async () => {
    const subnets = ['n1', 'n2', 'n3'].map((n) => c.subnetOf(n));
    const p = probe(a1, c1);
    await waitFor('the probe to be under way', () => p.sent() >= 100, 15_000);
    await c.wipeEtcd();
    assert.equal(await c.etcdctl(['get', 'config']), '', 'etcd starts empty');
    // Agents write their leases back as soon as etcd answers, before anyone writes the config again.
    await waitFor(
      'every lease back in etcd',
      async () => {
        const items = JSON.parse(await c.etcdctl(['list', 'subnets/'])) as { key: string; value: string }[];
        return subnets.every((s, i) =>
          items.some((kv) => kv.key === keyOf(s) && (JSON.parse(kv.value) as { PublicIP: string }).PublicIP === `198.18.0.${11 + i}`),
        );
      },
      30_000,
      250,
    );
    const init = await c.networkInit(flannelDocConfig('vxlan'));
    assert.equal(init.code, 0, init.stderr);
    const r = await p.result;
    assert.equal(r.lost, 0, `a1 → c1 across the etcd wipe: lost ${r.lost} (seq ${r.seqs})`);
    for (const n of ['n1', 'n2', 'n3']) {
      const st = await c.waitReady(n, 2);
      assert.ok(st.store.healthy);
      assert.match(st.store.reset?.reason ?? '', /revision went back|cluster ID changed|was missing/, `${n}: ${JSON.stringify(st.store)}`);
    }
    const text = await c.topo.exec(undefined, [NODE, WEFT, 'agent', 'status', '--state-dir', c.node('n1').stateDir]);
    assert.match(text.stdout, /STORE RESET detected at \S+ \(/);
    assert.equal(await reach(a1, b1), a1.ip);
    assert.equal(await c.tcp('c1', a1.ip), c1.ip);

    await c.addNode('n4', 4);
    c.startAgent('n4');
    await c.waitReady('n4', 3);
    assert.ok(!subnets.includes(c.subnetOf('n4')), `n4 got ${c.subnetOf('n4')}, held by another node`);
    for (const n of ['n1', 'n2', 'n3']) await c.waitReady(n, 3);
    const d1 = await c.addPod('d1', 'n4');
    assert.equal(await reach(a1, d1), a1.ip);
    assert.equal(await c.tcp('d1', c1.ip), d1.ip);
  });
});
