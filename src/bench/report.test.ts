import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { missing, outcome, percentile } from './report.js';

describe('bench reports', () => {
  it('a bar not met leaves the run ok; a missing figure makes it broken', () => {
    const bars = [{ what: 'x', bar: '≤ 1', value: 2, met: false }];
    assert.deepEqual(outcome(bars, []), { ok: true, problems: [], bars });
    const broken = outcome(bars, missing({ addP50: NaN, delP50: 3, cpu: Infinity }));
    assert.equal(broken.ok, false);
    assert.deepEqual(broken.problems, ['addP50 was not measured', 'cpu was not measured']);
  });

  it('percentile is nearest-rank and NaN for no samples', () => {
    assert.equal(percentile([5, 1, 3, 2, 4], 50), 3);
    assert.equal(percentile([5, 1, 3, 2, 4], 95), 5);
    assert.ok(Number.isNaN(percentile([], 50)));
  });
});
