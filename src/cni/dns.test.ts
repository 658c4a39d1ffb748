import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { podDns } from './config.js';
import { CniError, type Env, type NetConf } from './spec.js';

const env = (args: Record<string, string>): Env => ({
  command: 'ADD',
  containerId: 'c1',
  netns: '/run/netns/x',
  ifname: 'eth0',
  args: new Map(Object.entries(args)),
  path: [],
});
const conf = (extra: Record<string, unknown> = {}): NetConf => ({ cniVersion: '1.1.0', name: 'weft', type: 'weft', ...extra });

describe("CNI result dns: the pod's resolver settings", () => {
  it("the cluster DNS, the search path of the pod's namespace from CNI_ARGS, ndots:5", () => {
    assert.deepEqual(podDns(conf(), env({ K8S_POD_NAMESPACE: 'team-a', K8S_POD_NAME: 'p' })), {
      nameservers: ['10.96.0.10'],
      search: ['team-a.svc.cluster.local', 'svc.cluster.local', 'cluster.local'],
      options: ['ndots:5'],
    });
    assert.deepEqual(podDns(conf(), env({}))?.search, ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local']);
  });

  it('clusterDNS and clusterDomain in the config change it; clusterDNS [] leaves it out; a dns section is taken as it is', () => {
    assert.deepEqual(podDns(conf({ clusterDNS: ['10.0.0.10'], clusterDomain: 'corp.example' }), env({ K8S_POD_NAMESPACE: 'x' })), {
      nameservers: ['10.0.0.10'],
      search: ['x.svc.corp.example', 'svc.corp.example', 'corp.example'],
      options: ['ndots:5'],
    });
    assert.equal(podDns(conf({ clusterDNS: [] }), env({})), undefined);
    assert.deepEqual(podDns(conf({ dns: { nameservers: ['192.0.2.53'] } }), env({})), { nameservers: ['192.0.2.53'] });
  });

  it('refuses a bad clusterDNS, clusterDomain or dns with an invalid-config error', () => {
    for (const bad of [{ clusterDNS: '10.96.0.10' }, { clusterDNS: ['dns.local'] }, { clusterDomain: 'Bad Domain' }, { dns: ['10.96.0.10'] }]) {
      assert.throws(
        () => podDns(conf(bad), env({})),
        (e: unknown) => e instanceof CniError && e.code === 7,
        JSON.stringify(bad),
      );
    }
  });
});
