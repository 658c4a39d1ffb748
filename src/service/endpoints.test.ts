import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointsOf, servicesSelecting } from './endpoints.js';
import { livenessOf } from './live.js';
import type { EndpointSliceRecord, PodRecord, Service } from './types.js';
import { parseCidr } from '../ip/cidr.js';

const service = (over: Partial<Service> = {}): Service => ({
  namespace: 'default',
  name: 'web',
  labels: {},
  type: 'ClusterIP',
  clusterIP: '10.96.0.10',
  ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' }],
  selector: { app: 'web' },
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  externalTrafficPolicy: 'Cluster',
  internalTrafficPolicy: 'Cluster',
  uid: 'u',
  creationTimestamp: '',
  ...over,
});

const pod = (name: string, over: Partial<PodRecord> = {}): PodRecord => ({
  namespace: 'default',
  name,
  labels: { app: 'web' },
  ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
  node: 'node1',
  ip: '10.244.1.2',
  ready: true,
  terminating: false,
  uid: name,
  creationTimestamp: '',
  ...over,
});

const ips = (e: { ip: string }[]) => e.map((x) => x.ip);

describe('endpointsOf: pods behind a selector', () => {
  it('takes matching pods of the namespace with an IP; conditions from readiness and terminating; sorted by IP', () => {
    const pods = [
      pod('a', { ip: '10.244.2.9' }),
      pod('b', { ip: '10.244.1.3', ready: false }),
      pod('c', { ip: '10.244.1.4', terminating: true }),
      pod('d', { ip: '10.244.1.5', labels: { app: 'db' } }),
      pod('e', { ip: '10.244.1.6', namespace: 'other' }),
      pod('f', { ip: undefined }),
      pod('g', { ip: '10.244.1.10', labels: { app: 'web', extra: 'x' } }),
    ];
    const eps = endpointsOf(service(), { pods, slices: [] });
    assert.deepEqual(ips(eps), ['10.244.1.3', '10.244.1.4', '10.244.1.10', '10.244.2.9']);
    assert.deepEqual(eps[0]!.conditions, { ready: false, serving: false, terminating: false });
    assert.deepEqual(eps[1]!.conditions, { ready: false, serving: true, terminating: true });
    assert.deepEqual(eps[3], {
      ip: '10.244.2.9',
      nodeName: 'node1',
      targetRef: { kind: 'Pod', namespace: 'default', name: 'a' },
      conditions: { ready: true, serving: true, terminating: false },
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
  });

  it('resolves a named targetPort per pod by name and protocol; a pod without it is left out of that port', () => {
    const svc = service({
      ports: [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' },
        { name: 'raw', protocol: 'TCP', port: 81, targetPort: 9000 },
      ],
    });
    const pods = [
      pod('a', {
        ip: '10.244.1.2',
        ports: [
          { name: 'http', containerPort: 8080, protocol: 'TCP' },
          { name: 'dns', containerPort: 5353, protocol: 'UDP' },
        ],
      }),
      pod('b', { ip: '10.244.1.3', ports: [{ name: 'dns', containerPort: 53, protocol: 'TCP' }] }),
    ];
    const [a, b] = endpointsOf(svc, { pods, slices: [] });
    assert.deepEqual(a!.ports, [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'dns', port: 5353, protocol: 'UDP' },
      { name: 'raw', port: 9000, protocol: 'TCP' },
    ]);
    assert.deepEqual(b!.ports, [{ name: 'raw', port: 9000, protocol: 'TCP' }]);
    const onlyNamed = service();
    assert.deepEqual(endpointsOf(onlyNamed, { pods: [pods[1]!], slices: [] }), []);
  });

  it('leaves out pods whose node has no lease (live)', () => {
    const live = livenessOf(parseCidr('10.244.0.0/16'), [parseCidr('10.244.1.0/24')]);
    const eps = endpointsOf(service(), { pods: [pod('a', { ip: '10.244.1.2' }), pod('b', { ip: '10.244.2.2' })], slices: [] }, live);
    assert.deepEqual(ips(eps), ['10.244.1.2']);
    assert.equal(live('192.168.5.5'), true, 'an address outside the pod Network always counts');
    assert.equal(livenessOf(undefined, [])('10.244.9.9'), true, 'no network config: everything counts');
  });

  it('gives headless and ExternalName Services endpoints too', () => {
    for (const svc of [service({ clusterIP: 'None' }), service({ type: 'ExternalName', clusterIP: undefined, externalName: 'x.example' })])
      assert.equal(endpointsOf(svc, { pods: [pod('a')], slices: [] }).length, 1);
  });
});

describe('endpointsOf: EndpointSlices of a Service without a selector', () => {
  const slice = (name: string, over: Partial<EndpointSliceRecord> = {}): EndpointSliceRecord => ({
    namespace: 'default',
    name,
    serviceName: 'ext',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['10.0.0.5'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node1' }],
    ...over,
  });

  it('takes the addresses of slices labelled with its name, in its namespace; ports by name and protocol', () => {
    const svc = service({ name: 'ext', selector: undefined });
    const slices = [
      slice('ext-1'),
      slice('ext-2', {
        ports: [
          { name: 'http', port: 9090, protocol: 'TCP' },
          { name: 'other', port: 1, protocol: 'TCP' },
        ],
        endpoints: [{ addresses: ['10.0.0.4'], conditions: { ready: false, serving: true, terminating: true } }],
      }),
      slice('not-mine', { serviceName: 'web' }),
      slice('elsewhere', { namespace: 'x' }),
    ];
    const eps = endpointsOf(svc, { pods: [pod('a')], slices });
    assert.deepEqual(eps, [
      { ip: '10.0.0.4', conditions: { ready: false, serving: true, terminating: true }, ports: [{ name: 'http', port: 9090, protocol: 'TCP' }] },
      {
        ip: '10.0.0.5',
        nodeName: 'node1',
        conditions: { ready: true, serving: true, terminating: false },
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      },
    ]);
  });
});

describe('servicesSelecting', () => {
  it('finds the Services whose selector matches a pod in its namespace', () => {
    const services = [
      service({ name: 'a' }),
      service({ name: 'b', selector: { app: 'db' } }),
      service({ name: 'c', selector: undefined }),
      service({ name: 'd', namespace: 'x' }),
      service({ name: 'e', selector: {} }),
    ];
    assert.deepEqual(
      servicesSelecting(pod('p'), services).map((s) => s.name),
      ['a', 'e'],
    );
  });
});
