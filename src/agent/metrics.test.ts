import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { AgentMetrics, triggerOf, type MetricsSource } from './metrics.js';

const source = (over: Partial<MetricsSource> = {}): MetricsSource => ({
  node: 'n1',
  backend: () => 'udp',
  ownLease: () => ({ subnet: '10.244.1.0/24', publicIP: '198.18.0.11' }),
  remoteLeases: () => 2,
  etcdHealthy: () => true,
  datapath: () => ({
    attached: true,
    attaches: 1,
    counters: { txPackets: 10, txBytes: 1000, rxPackets: 7, rxBytes: 700, droppedUnknownSource: 3, droppedMalformed: 1, netUnreachable: 2, sendErrors: 0 },
  }),
  services: () => ({
    registryPrefix: '/weft',
    started: true,
    bridgeNf: '1',
    services: 2,
    endpoints: 3,
    chains: 4,
    rules: 9,
    dns: { ip: '10.96.0.10', zone: 'cluster.local', queries: { udp: 5, tcp: 1 }, rcodes: { NOERROR: 4, NXDOMAIN: 2 }, forwarded: 1 },
  }),
  forged: () => Promise.resolve({ packets: 4, bytes: 400 }),
  ...over,
});

describe('agent metrics', () => {
  it('folds the scheduler reasons into four triggers', () => {
    assert.deepEqual(['initial', 'lease added', 'lease removed', 'resync', 'retry'].map(triggerOf), ['initial', 'lease', 'lease', 'resync', 'retry']);
  });

  it('reads states and foreign counters at scrape time, in Prometheus text that promtool accepts', async () => {
    let forged = 4;
    const m = new AgentMetrics(source({ forged: () => Promise.resolve({ packets: forged, bytes: forged * 100 }) }));
    m.cniDuration.observe({ command: 'ADD', plugin: 'weft' }, 0.012);
    m.cniErrors.inc({ command: 'DEL', plugin: 'weft', code: '11' });
    m.driftRepairs.inc({ kind: 'route' });
    const text = await m.registry.metrics();
    for (const line of [
      'weft_agent_info{node="n1",backend="udp"} 1',
      'weft_lease_info{subnet="10.244.1.0/24",public_ip="198.18.0.11"} 1',
      'weft_remote_leases 2',
      'weft_vxlan_forged_packets_total 4',
      'weft_udp_packets_total{direction="tx"} 10',
      'weft_udp_bytes_total{direction="rx"} 700',
      'weft_udp_dropped_packets_total{reason="unknown_source"} 3',
      'weft_udp_dropped_packets_total{reason="net_unreachable"} 2',
      'weft_udp_errors_total{op="udp_send"} 0',
      'weft_service_rules 9',
      'weft_dns_responses_total{rcode="NXDOMAIN"} 2',
      'weft_dns_queries_total{protocol="tcp"} 1',
      'weft_cni_request_duration_seconds_bucket{le="0.025",command="ADD",plugin="weft"} 1',
      'weft_cni_request_errors_total{command="DEL",plugin="weft",code="11"} 1',
      'weft_drift_repairs_total{kind="route"} 1',
    ])
      assert.ok(text.split('\n').includes(line), line);
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    forged = 9;
    assert.match(await m.registry.metrics(), /^weft_vxlan_forged_packets_total 9$/m, 'a counter read at scrape follows its source');
  });

  it('leaves out what the agent does not have: no lease, no udp loop; no Services yet reads 0', async () => {
    const m = new AgentMetrics(
      source({ ownLease: () => undefined, datapath: () => undefined, services: () => undefined, forged: () => Promise.resolve(undefined) }),
    );
    const text = await m.registry.metrics();
    assert.match(text, /^weft_lease_held 0$/m);
    assert.doesNotMatch(text, /^weft_lease_info\{/m);
    assert.doesNotMatch(text, /^weft_udp_packets_total\{/m);
    assert.match(text, /^weft_services 0$/m);
  });
});
