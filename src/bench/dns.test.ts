import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDnsReport, parseDnsperf, parseLatencies, type DnsReport } from './dns.js';

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

test("dnsperf -v's one line per query becomes p50/p99 in ms; lost queries and the summary are not samples", () => {
  const lines = ['[Status] Command line: dnsperf -s 127.0.0.1 -p 5353 -d q -l 1 -c 8 -Q 5000 -v', '[Status] Sending queries (to 127.0.0.1:5353)'];
  for (let i = 1; i <= 100; i++)
    lines.push(`> ${i % 4 === 0 ? 'NXDOMAIN' : 'NOERROR'} svc-${i}.ns-1.svc.cluster.local ${i % 3 === 0 ? 'SRV' : 'A'} ${(i / 10000).toFixed(6)}`);
  lines.push('[Timeout] Query timed out: msg id 7', '', 'Statistics:', '  Average Latency (s):  0.000123 (min 0.000010, max 0.010000)');
  const r = parseLatencies(lines.join('\n'));
  assert.equal(r.answered, 100);
  assert.equal(r.p50Ms.toFixed(3), '5.000');
  assert.equal(r.p99Ms.toFixed(3), '9.900');
  assert.ok(Number.isNaN(parseLatencies('dnsperf: error').p50Ms));
});

test('the table has both servers with p50/p99, and the apply → resolvable line', () => {
  const run = { qps: 40000, sent: 400000, lost: 3, avgMs: 1.5, maxMs: 20, p50Ms: 0.12, p99Ms: 0.9 };
  const r = {
    bench: 'dns',
    services: 10000,
    seconds: 10,
    queries: 'mix',
    weft: run,
    nsd: { ...run, qps: 100000 },
    ratio: 0.4,
    weftHeapMB: 12.3,
    weftRssMB: 80,
    pinned: true,
    latencySeconds: 3,
    latencyQps: 5000,
    rounds: 20,
    resolvableP50Ms: 12.34,
    resolvableP95Ms: 56.78,
    resolvableMaxMs: 60,
    fromStartP50Ms: 40,
    fromStartP95Ms: 90,
    writeP50Ms: 30,
    ok: true,
    problems: [],
    bars: [],
  } satisfies DnsReport;
  const text = formatDnsReport(r);
  assert.match(text, /server +qps +sent +lost +avg ms +max ms +p50 ms +p99 ms/);
  assert.match(text, /weft +40000 +400000 +3\.00 +1\.50 +20\.0 +0\.12 +0\.90/);
  assert.match(text, /p50\/p99 from 3 s more at 5000 qps/);
  assert.match(
    text,
    /20 rounds.*p50 12\.3 ms, p95 56\.8 ms, max 60\.0 ms; from the write's start p50 40\.0 ms, p95 90\.0 ms \(the write itself p50 30\.0 ms\)/,
  );
});
