import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { NODE, WEFT } from './agent-support.js';

const weft = (args: string[]) => spawnSync(NODE, [WEFT, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('weft agent: the service proxy options (no root, no etcd)', () => {
  it('refuses a --registry-prefix inside flannel’s --etcd-prefix, before contacting etcd', () => {
    for (const prefix of ['/coreos.com/network', '/coreos.com/network/weft']) {
      const r = weft([
        'agent',
        '--node',
        'n1',
        '--etcd-endpoints',
        'http://127.0.0.1:1',
        '--state-dir',
        '/nonexistent-weft-state',
        '--registry-prefix',
        prefix,
      ]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /--registry-prefix .* lies inside flannel's --etcd-prefix/);
    }
  });

  it('help names the registry prefix and says the service rules survive a stop', () => {
    const h = weft(['agent', '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /--registry-prefix PREFIX .*\[default: \/weft\]/);
    assert.match(h.stdout, /service rules stay/);
  });
});
