import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newLab } from './build.js';
import { ALL_PAIRS_UP_TO, podPairs } from './verify.js';
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
