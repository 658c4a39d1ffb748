import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { DnsReport } from '../src/bench/dns.js';

const WEFT = fileURLToPath(new URL('../../bin/weft', import.meta.url));

test('weft bench dns --quick --json: both servers measured on the same records (qps, lost, p50/p99), the ratio, the memory, and apply → resolvable in a lab', () => {
  const r = spawnSync(process.execPath, [WEFT, 'bench', 'dns', '--quick', '--services', '200', '--seconds', '1', '--rounds', '3', '--json'], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as DnsReport;
  assert.equal(report.services, 200);
  assert.deepEqual(report.problems, []);
  for (const run of [report.weft, report.nsd]) {
    assert.ok(run.qps > 100 && run.sent > 100, JSON.stringify(run));
    assert.ok(run.lost < run.sent / 10, JSON.stringify(run));
    assert.ok(run.p50Ms > 0 && run.p99Ms >= run.p50Ms, JSON.stringify(run));
  }
  assert.ok(Math.abs(report.ratio - report.weft.qps / report.nsd.qps) < 1e-9);
  assert.deepEqual(
    report.bars.map((b) => b.what),
    ['qps vs NSD', 'apply→resolvable p95'],
  );
  assert.equal(report.rounds, 3);
  assert.ok(report.resolvableP50Ms <= report.resolvableP95Ms && report.resolvableP95Ms <= report.resolvableMaxMs, JSON.stringify(report));
  assert.ok(report.resolvableMaxMs < 10_000);
  assert.ok(report.writeP50Ms > 0 && report.fromStartP95Ms >= report.resolvableP95Ms, JSON.stringify(report));
  assert.ok(report.weftHeapMB > 0);
  assert.match(r.stderr, /weft: 200 Services/);
  assert.match(r.stderr, /apply → resolvable on every node, 3 rounds/);
});
