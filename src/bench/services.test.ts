import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatServicesReport, judge, type ServicesReport, type ServicesRow } from './services.js';

const row = (services: number, over: Partial<ServicesRow> = {}): ServicesRow => ({
  services,
  writeSeconds: 0.1,
  programmedSeconds: 0.5,
  connectP50Ms: 0.1,
  connectP99Ms: 0.2,
  directP50Ms: 0.09,
  directP99Ms: 0.18,
  connectFailures: 0,
  addMs: 20,
  addMaxMs: 30,
  moveMs: 20,
  moveMaxMs: 25,
  agentChangeMs: 2,
  fullSyncSeconds: 1,
  agentFullSyncMs: 300,
  clusterIpGbps: 9.8,
  podIpGbps: 10,
  throughputRatio: 0.98,
  agentRssMiB: 60,
  rulesetBytes: 4096,
  chains: 30,
  rules: 40,
  elements: 12,
  ...over,
});

describe('bench services: bars', () => {
  it('sets the largest N against the first, and throughput at every N', () => {
    const o = judge([row(10), row(1000), row(30000, { connectP50Ms: 0.13, connectP99Ms: 0.2, addMs: 70, moveMs: 20, throughputRatio: 0.85 })]);
    assert.equal(o.ok, true);
    const by = Object.fromEntries(o.bars.map((b) => [b.what, b]));
    assert.equal(by['connect p50 at 30000 vs 10']!.met, false);
    assert.ok(Math.abs(by['connect p50 at 30000 vs 10']!.value - 1.3) < 1e-9);
    assert.equal(by['connect p99 at 30000 vs 10']!.met, true);
    assert.equal(by['add a Service at 30000 vs 10']!.met, false);
    assert.equal(by['move an endpoint at 30000 vs 10']!.met, true);
    assert.deepEqual(
      o.bars.filter((b) => b.what.startsWith('ClusterIP/pod IP')).map((b) => b.met),
      [true, true, false],
    );
  });

  it('a failed connect or a figure not measured makes the run broken', () => {
    const o = judge([row(10), row(1000, { connectFailures: 2, addMs: NaN })]);
    assert.equal(o.ok, false);
    assert.deepEqual(o.problems, ['2 connects failed at N=1000', 'addMs at N=1000 was not measured']);
  });

  it('prints each N with its ratio to the first', () => {
    const rows = [row(10), row(1000, { addMs: 30 })];
    const r: ServicesReport = { bench: 'services', connects: 300, changes: 3, iperfSeconds: 1, iperfRounds: 1, rows, ...judge(rows) };
    const text = formatServicesReport(r);
    assert.match(text, /^1000 .* 30\.0 +1\.50x/m);
    assert.match(text, /elements/);
  });
});
