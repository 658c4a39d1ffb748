import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newLab } from './build.js';
import { ALL_PAIRS_UP_TO, formatVerify, podPairs, tally } from './verify.js';
import { secondTry, timedOut } from './workload.js';
import type { LabState } from './state.js';

function lab(podsPerNode: number[]): LabState {
  const s = newLab('t', 'vxlan');
  podsPerNode.forEach((m, i) => {
    const node = `node${i + 1}`;
    s.nodes.push({ name: node, ns: `wl.t.${node}`, ip: `198.18.0.${11 + i}`, index: i + 1, port: `port${i + 1}` });
    for (let k = 0; k < m; k++) s.pods.push({ name: `pod-${i + 1}-${k}`, node, ns: `wl.t.pod-${i + 1}-${k}`, ip: `10.244.${i}.${k + 2}`, containers: ['app'] });
  });
  return s;
}

test('a small lab, or --all-pairs, checks every ordered pod pair', () => {
  const small = podPairs(lab([2, 2, 2]));
  assert.equal(small.same.length + small.across.length, 6 * 5);
  assert.equal(small.coverage.sampled, false);
  const forced = podPairs(lab([10, 10, 10]), true);
  assert.equal(forced.same.length + forced.across.length, 30 * 29);
  assert.match(forced.coverage.note, /--all-pairs/);
});

test('above the size, every pod is checked and every ordered node pair is covered, with few peers per pod', () => {
  for (const shape of [Array<number>(20).fill(10), Array<number>(100).fill(10), [1, 7, 3, 12, 2, 9, 4, 0, 5]]) {
    const s = lab(shape);
    assert.ok(s.pods.length > ALL_PAIRS_UP_TO);
    const { same, across, coverage } = podPairs(s);
    assert.equal(coverage.sampled, true);
    const nodes = s.nodes.filter((n) => s.pods.some((p) => p.node === n.name)).map((n) => n.name);
    const covered = new Set(across.map((p) => `${p.src.node}>${p.dst.node}`));
    for (const a of nodes) for (const b of nodes) if (a !== b) assert.ok(covered.has(`${a}>${b}`), `${a} → ${b} not covered (${shape.join(',')})`);
    assert.ok(
      across.every((p) => p.src.node !== p.dst.node),
      'a pair across nodes is on one node',
    );
    assert.ok(
      same.every((p) => p.src.node === p.dst.node && p.src !== p.dst),
      'a same-node pair is not on one node',
    );
    for (const p of s.pods) assert.ok(across.some((x) => x.src === p) || nodes.length === 1, `${p.name} checks no pod on another node`);
    assert.match(coverage.note, /^sampled \d+ of \d+ ordered pod pairs/);
  }
  const big = podPairs(lab(Array<number>(100).fill(10)));
  assert.equal(big.across.length, 100 * 99, 'each ordered node pair once');
  assert.equal(big.same.length, 1000);
});

test('a probe that timed out gets one more try, and only such a probe', async () => {
  const seen = { pod: 'b', node: 'n2', container: 'app', proto: 'tcp' as const, port: 80, client: '10.244.0.2' };
  const probes = ['timeout', 'refused', 'ok', 'late-ping', 'wrong'];
  const first = [
    { ok: false as const, error: 'no answer within 2000 ms (no connection: SYN unanswered)', ms: 2000 },
    { ok: false as const, error: 'connect ECONNREFUSED 10.244.1.2:80', ms: 1 },
    { ok: true as const, seen, ms: 1 },
    { ok: false as const, error: 'no echo reply within 2000 ms', ms: 2000 },
    { ok: true as const, seen: { ...seen, pod: 'c' }, ms: 1 },
  ];
  const asked: string[][] = [];
  const out = await secondTry(probes, first, (again) => {
    asked.push(again);
    return Promise.resolve([
      { ok: true as const, seen, ms: 1 },
      { ok: false as const, error: 'no echo reply within 2000 ms', ms: 2000 },
    ]);
  });
  assert.deepEqual(asked, [['timeout', 'late-ping']]);
  assert.deepEqual(
    out.map((o) => [o.result.ok, o.retried]),
    [
      [true, 'no answer within 2000 ms (no connection: SYN unanswered)'],
      [false, undefined],
      [true, undefined],
      [false, 'no echo reply within 2000 ms'],
      [true, undefined],
    ],
  );
  assert.equal(timedOut(first[1]!), false);
  let called = false;
  await secondTry(['ok'], [first[2]!], () => ((called = true), Promise.resolve([])));
  assert.equal(called, false, 'nothing timed out: no second request');
});

test('verify counts a check that passed on a second try as passed, and says how many did', () => {
  const r = (ok: boolean, retried?: string) => ({ group: 'g', check: 'tcp', from: 'a', to: 'b', ok, evidence: 'e', ...(retried ? { retried } : {}) });
  const results = [r(true), r(true, 'no answer within 2000 ms'), r(false, 'no answer within 2000 ms'), { ...r(true), skipped: true }];
  assert.deepEqual(tally(results), { passed: 2, failed: 1, skipped: 1, retried: 1 });
  assert.match(
    formatVerify(lab([1, 1]), results, podPairs(lab([1, 1])).coverage),
    /2 passed \(1 on a second try after a timeout\), 1 failed, 1 not applicable$/,
  );
});
