import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { randomMac } from './mac.js';

describe('randomMac', () => {
  it('gives lower-case, unicast, locally administered addresses that differ', () => {
    const macs = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const m = randomMac();
      assert.match(m, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      const first = parseInt(m.slice(0, 2), 16);
      assert.equal(first & 0x01, 0, 'unicast');
      assert.equal(first & 0x02, 0x02, 'locally administered');
      macs.add(m);
    }
    assert.ok(macs.size > 190);
  });
});
