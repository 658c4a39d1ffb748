import assert from 'node:assert/strict';
import { test } from 'node:test';
import { podOfCniArgs } from '../agent/services.js';
import { parseManifests } from '../service/manifest.js';
import { podCniArgs } from './build.js';
import { demoManifests, manifestText } from './demo.js';
import { formatLabels, formatPorts } from './registry.js';

test("a lab pod's CNI_ARGS name it as kubelet does, and the agent reads them back", () => {
  assert.equal(podCniArgs({ name: 'web-1', namespace: 'shop' }), 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1');
  assert.deepEqual(podOfCniArgs(podCniArgs({ name: 'pod-1a' })), { namespace: 'default', name: 'pod-1a' });
});

test("lab up's demo manifests pass the API server's validation: a pod spec per pod, and the Service echo over them", () => {
  const docs = parseManifests(
    manifestText(
      demoManifests([
        { pod: 'pod-1a', node: 'node1' },
        { pod: 'pod-2a', node: 'node2' },
      ]),
    ),
    'lab up',
  );
  assert.deepEqual(
    docs.map((d) => d.kind),
    ['Pod', 'Pod', 'Service'],
  );
  const pod = docs[1]!;
  assert.ok(pod.kind === 'Pod');
  assert.deepEqual(pod.pod.labels, { app: 'echo' });
  assert.equal(pod.pod.node, 'node2');
  assert.deepEqual(
    pod.pod.ports.map((p) => `${p.name}:${p.containerPort}/${p.protocol}`),
    ['http:80/TCP', 'udp:80/UDP'],
  );
  const svc = docs[2]!;
  assert.ok(svc.kind === 'Service');
  assert.equal(svc.service.name, 'echo');
  assert.deepEqual(svc.service.selector, { app: 'echo' });
  assert.deepEqual(
    svc.service.ports.map((p) => [p.name, p.protocol, p.port, p.targetPort]),
    [
      ['http', 'TCP', 80, 'http'],
      ['udp', 'UDP', 80, 'udp'],
    ],
  );
});

test('Services and labels print as kubectl shows them', () => {
  const ports = [
    { name: 'http', protocol: 'TCP' as const, port: 80, targetPort: 8080, nodePort: 30080 },
    { name: 'dns', protocol: 'UDP' as const, port: 53, targetPort: 'dns' },
  ];
  assert.equal(formatPorts({ ports } as Parameters<typeof formatPorts>[0]), '80:30080/TCP,53/UDP');
  assert.equal(formatLabels({ app: 'web', tier: 'front' }), 'app=web,tier=front');
  assert.equal(formatLabels(undefined), '');
});
