import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const WEFT = fileURLToPath(new URL('../../bin/weft', import.meta.url));
const weft = (...args: string[]) => spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 20_000 });
const ETCD = ['--etcd-endpoints', 'http://127.0.0.1:1'];

test('weft dns serve: usage errors exit 2 and name the option', () => {
  for (const [args, says] of [
    [[], /needs --etcd-endpoints/],
    [[...ETCD, '--listen', '10.96.0.10:99999'], /--listen takes IPv4\[:PORT\], not "10.96.0.10:99999"/],
    [[...ETCD, '--listen', '127.0.0.1', '--listen', 'nope'], /--listen takes IPv4\[:PORT\], not "nope"/],
    [[...ETCD, '--upstream', 'resolver.example'], /--upstream takes IPv4\[:PORT\]/],
    [[...ETCD, '--allow', '10.0.0.0/8,bogus'], /--allow takes CIDRs/],
    [[...ETCD, '--ttl', '100000'], /--ttl takes a whole number from 0 to 86400/],
    [[...ETCD, '--cluster-domain', 'Cluster..Local'], /--cluster-domain "Cluster..Local" is not a domain name/],
  ] as const) {
    const r = weft('dns', 'serve', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, says);
  }
});

test('weft dns serve: etcd out of reach is a failure (exit 1) that says where it looked', () => {
  const r = weft('dns', 'serve', ...ETCD, '--listen', '127.0.0.1:0');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cannot read the registry from http:\/\/127\.0\.0\.1:1: .*\(is etcd running\?\)/);
});
