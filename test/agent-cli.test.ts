import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { NODE, WEFT } from './agent-support.js';

const weft = (args: string[]) => spawnSync(NODE, [WEFT, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('weft network init / weft agent: argument checks (no root, no etcd)', () => {
  it('rejects a bad config with a message naming the field, before contacting etcd', () => {
    const cases: [string, RegExp][] = [
      ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}', /Backend\.VNI/],
      ['{"Network":"10.244.0.1/16"}', /field Network/],
      ['{"Network":"10.244.0.0/16","SubnetLen":12}', /field SubnetLen/],
      ['{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}', /field Backend\.Type/],
      ['{"Netwrok":"10.244.0.0/16"}', /unknown field Netwrok/],
    ];
    for (const [config, field] of cases) {
      const r = weft(['network', 'init', '--config', config, '--etcd-endpoints', 'http://127.0.0.1:1']);
      assert.equal(r.status, 1, config);
      assert.match(r.stderr, field, config);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });

  it('explains missing options', () => {
    const r = weft(['agent', '--etcd-endpoints', 'http://127.0.0.1:1']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /agent needs --node NAME/);
    const s = weft(['agent', 'status']);
    assert.equal(s.status, 2);
    assert.match(s.stderr, /--state-dir/);
    const h = weft(['agent', '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /--cni-socket PATH/);
  });

  it('status on a directory with no agent says so', () => {
    const r = weft(['agent', 'status', '--state-dir', '/nonexistent-weft-state']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no agent answers in \/nonexistent-weft-state/);
  });
});
