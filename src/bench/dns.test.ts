import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDnsperf } from './dns.js';

test("dnsperf's summary becomes figures (latencies in ms)", () => {
  const out = `Statistics:

  Queries sent:         484921
  Queries completed:    484308 (99.87%)
  Queries lost:         613 (0.13%)

  Response codes:       NOERROR 363069 (74.97%), NXDOMAIN 121239 (25.03%)
  Average packet size:  request 53, response 112
  Run time (s):         10.002887
  Queries per second:   48417.722373

  Average Latency (s):  0.003884 (min 0.000280, max 0.123841)
  Latency StdDev (s):   0.004086
`;
  const r = parseDnsperf(out);
  assert.equal(r.sent, 484921);
  assert.equal(r.lost, 613);
  assert.equal(Math.round(r.qps), 48418);
  assert.equal(r.avgMs.toFixed(3), '3.884');
  assert.equal(r.maxMs.toFixed(1), '123.8');
  assert.ok(Number.isNaN(parseDnsperf('dnsperf: error').qps));
});
