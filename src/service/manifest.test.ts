import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManifestError, parseManifests, serviceObject, type Manifest } from './manifest.js';
import type { Service } from './types.js';

const svc = (spec: string, meta = 'name: web') => `apiVersion: v1\nkind: Service\nmetadata: {${meta}}\nspec:\n${spec}`;

/** The issues parseManifests reports, as `path: message`. */
function problems(text: string): string[] {
  try {
    parseManifests(text, 'f.yaml');
  } catch (e) {
    assert.ok(e instanceof ManifestError, String(e));
    return e.issues.map((i) => `${i.path}: ${i.message}`);
  }
  assert.fail('expected a ManifestError');
}

function one(text: string, re: RegExp): void {
  const got = problems(text);
  assert.ok(
    got.some((p) => re.test(p)),
    `no issue matching ${re}; got:\n${got.join('\n')}`,
  );
}

const onlyService = (m: Manifest[]) => {
  assert.equal(m.length, 1);
  assert.equal(m[0]!.kind, 'Service');
  return (m[0] as Manifest & { kind: 'Service' }).service;
};

describe('parseManifests: valid documents', () => {
  it('fills in the API server defaults for a Service', () => {
    const s = onlyService(parseManifests(svc('  selector: {app: web}\n  ports: [{port: 80}]'), 'f'));
    assert.deepEqual(s, {
      namespace: 'default',
      name: 'web',
      labels: {},
      type: 'ClusterIP',
      ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80 }],
      selector: { app: 'web' },
      sessionAffinity: 'None',
      affinityTimeoutSeconds: 10800,
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
    });
  });

  it('reads every field weft uses, several documents, YAML and JSON', () => {
    const text = [
      svc(
        [
          '  type: NodePort',
          '  clusterIP: 10.96.0.10',
          '  selector: {app: web}',
          '  sessionAffinity: ClientIP',
          '  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}',
          '  externalTrafficPolicy: Local',
          '  internalTrafficPolicy: Local',
          '  ports:',
          '  - {name: http, port: 80, targetPort: http, nodePort: 30080}',
          '  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}',
        ].join('\n'),
        'name: web, namespace: shop, labels: {tier: front}',
      ),
      '---',
      JSON.stringify({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'ext-1', labels: { 'kubernetes.io/service-name': 'ext' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [
          { addresses: ['10.0.0.5'], nodeName: 'node1' },
          { addresses: ['10.0.0.6'], conditions: { ready: false, serving: true, terminating: true } },
        ],
      }),
      '---',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, labels: {app: web}}\nspec:\n  nodeName: node2\n  containers:\n  - name: app\n    image: nginx\n    ports: [{name: http, containerPort: 8080}, {containerPort: 53, protocol: UDP}]',
      '---',
      '',
    ].join('\n');
    const m = parseManifests(text, 'f');
    assert.deepEqual(
      m.map((d) => [d.kind, d.doc?.index]),
      [
        ['Service', 1],
        ['EndpointSlice', 2],
        ['Pod', 3],
      ],
    );
    const s = (m[0] as Manifest & { kind: 'Service' }).service;
    assert.equal(s.namespace, 'shop');
    assert.equal(s.clusterIP, '10.96.0.10');
    assert.equal(s.affinityTimeoutSeconds, 60);
    assert.deepEqual(s.ports[0], { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http', nodePort: 30080 });
    const slice = (m[1] as Manifest & { kind: 'EndpointSlice' }).slice;
    assert.equal(slice.serviceName, 'ext');
    assert.deepEqual(slice.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
    assert.deepEqual(slice.endpoints[0], { addresses: ['10.0.0.5'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node1' });
    assert.deepEqual(slice.endpoints[1]!.conditions, { ready: false, serving: true, terminating: true });
    const pod = (m[2] as Manifest & { kind: 'Pod' }).pod;
    assert.deepEqual(pod, {
      namespace: 'default',
      name: 'web-0',
      labels: { app: 'web' },
      node: 'node2',
      ports: [
        { name: 'http', containerPort: 8080, protocol: 'TCP' },
        { containerPort: 53, protocol: 'UDP' },
      ],
    });
  });

  it('takes headless and ExternalName Services without ports', () => {
    assert.equal(onlyService(parseManifests(svc('  clusterIP: None\n  selector: {app: db}'), 'f')).clusterIP, 'None');
    const ext = onlyService(parseManifests(svc('  type: ExternalName\n  externalName: db.example.com'), 'f'));
    assert.equal(ext.externalName, 'db.example.com');
    assert.equal(ext.clusterIP, undefined);
  });

  it('round-trips a stored Service through serviceObject', () => {
    const stored: Service = {
      ...onlyService(parseManifests(svc('  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30001}, {name: b, port: 81, nodePort: 30002}]'), 'f')),
      clusterIP: '10.96.0.7',
      uid: 'u',
      creationTimestamp: '2026-01-01T00:00:00.000Z',
    };
    const again = onlyService(parseManifests(JSON.stringify(serviceObject(stored)), 'f'));
    const { uid, creationTimestamp, ...input } = stored;
    assert.deepEqual(again, input);
    assert.deepEqual([uid, creationTimestamp], ['u', '2026-01-01T00:00:00.000Z']);
  });
});

describe('parseManifests: what the API server rejects, with the field and what to do', () => {
  const cases: [string, string, RegExp][] = [
    ['an unknown spec field', svc('  ports: [{port: 80}]\n  portz: 1'), /^spec\.portz: unknown field "portz"/],
    ['an unknown port field', svc('  ports: [{port: 80, prot: UDP}]'), /^spec\.ports\[0\]\.prot: unknown field/],
    ['an unknown top-level field', `${svc('  ports: [{port: 80}]')}\nextra: 1`, /^extra: unknown field/],
    ['an unknown metadata field', svc('  ports: [{port: 80}]', 'name: web, nmae: x'), /^metadata\.nmae: unknown field/],
    ['a port above 65535', svc('  ports: [{port: 70000}]'), /^spec\.ports\[0\]\.port: 70000 is out of range; a port must be 1-65535/],
    ['port 0', svc('  ports: [{port: 0}]'), /^spec\.ports\[0\]\.port: 0 is out of range/],
    ['a port as text', svc('  ports: [{port: "80"}]'), /^spec\.ports\[0\]\.port: must be a whole number/],
    ['a missing port', svc('  ports: [{name: http}]'), /^spec\.ports\[0\]\.port: is required/],
    ['a targetPort out of range', svc('  ports: [{port: 80, targetPort: 99999}]'), /^spec\.ports\[0\]\.targetPort: 99999 is out of range/],
    ['a bad named targetPort', svc('  ports: [{port: 80, targetPort: HTTP_PORT}]'), /^spec\.ports\[0\]\.targetPort: "HTTP_PORT" is not a valid port name/],
    ['a numeric string targetPort', svc('  ports: [{port: 80, targetPort: "8080"}]'), /^spec\.ports\[0\]\.targetPort: "8080" is not a valid port name/],
    [
      'duplicate port names',
      svc('  ports: [{name: a, port: 80}, {name: a, port: 81}]'),
      /^spec\.ports\[1\]\.name: duplicate port name "a" \(also spec\.ports\[0\]\)/,
    ],
    ['unnamed ports among several', svc('  ports: [{port: 80}, {port: 81}]'), /^spec\.ports\[0\]\.name: is required when a Service has more than one port/],
    ['the same port and protocol twice', svc('  ports: [{name: a, port: 80}, {name: b, port: 80}]'), /^spec\.ports\[1\]: duplicate port 80\/TCP/],
    ['SCTP', svc('  ports: [{port: 80, protocol: SCTP}]'), /^spec\.ports\[0\]\.protocol: "SCTP" is not supported by weft; use TCP or UDP/],
    ['a lowercase protocol', svc('  ports: [{port: 80, protocol: tcp}]'), /^spec\.ports\[0\]\.protocol: must be TCP or UDP, not "tcp"/],
    ['no ports', svc('  selector: {app: web}'), /^spec\.ports: is required/],
    ['an empty port list', svc('  ports: []'), /^spec\.ports: must list at least one port/],
    ['a nodePort on a ClusterIP Service', svc('  ports: [{port: 80, nodePort: 30080}]'), /^spec\.ports\[0\]\.nodePort: may only be set for type NodePort/],
    [
      'a duplicate nodePort',
      svc('  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]'),
      /^spec\.ports\[1\]\.nodePort: duplicate nodePort 30080\/TCP/,
    ],
    [
      'type LoadBalancer',
      svc('  type: LoadBalancer\n  ports: [{port: 80}]'),
      /^spec\.type: "LoadBalancer" is not supported by weft; use ClusterIP, NodePort or ExternalName/,
    ],
    ['an unknown type', svc('  type: Cluster\n  ports: [{port: 80}]'), /^spec\.type: must be ClusterIP, NodePort or ExternalName, not "Cluster"/],
    ['a clusterIP that is not an address', svc('  clusterIP: 10.96.0.300\n  ports: [{port: 80}]'), /^spec\.clusterIP: "10\.96\.0\.300" is not an IPv4 address/],
    ['an IPv6 clusterIP', svc('  clusterIP: "fd00::1"\n  ports: [{port: 80}]'), /^spec\.clusterIP: "fd00::1" is not an IPv4 address/],
    ['dual-stack', svc('  ipFamilies: [IPv4, IPv6]\n  ports: [{port: 80}]'), /^spec\.ipFamilies: weft Services are IPv4 only/],
    [
      'clusterIPs that disagree',
      svc('  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]\n  ports: [{port: 80}]'),
      /^spec\.clusterIPs: weft keeps one IPv4 ClusterIP/,
    ],
    ['ExternalName without a name', svc('  type: ExternalName'), /^spec\.externalName: is required for type ExternalName/],
    [
      'ExternalName with a clusterIP',
      svc('  type: ExternalName\n  externalName: a.b\n  clusterIP: 10.96.0.1'),
      /^spec\.clusterIP: must be left out for type ExternalName/,
    ],
    ['externalName on a ClusterIP Service', svc('  externalName: a.b\n  ports: [{port: 80}]'), /^spec\.externalName: may only be set for type ExternalName/],
    [
      'a bad externalName',
      svc('  type: ExternalName\n  externalName: "not a name"'),
      /^spec\.externalName: "not a name" is not valid: must be a DNS subdomain/,
    ],
    [
      'a headless NodePort',
      svc('  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]'),
      /^spec\.clusterIP: may not be None \(headless\) for type NodePort/,
    ],
    ['a bad sessionAffinity', svc('  sessionAffinity: Sticky\n  ports: [{port: 80}]'), /^spec\.sessionAffinity: must be None or ClientIP, not "Sticky"/],
    [
      'an affinity timeout of 0',
      svc('  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]'),
      /timeoutSeconds: 0 is out of range; the affinity timeout in seconds must be 1-86400/,
    ],
    [
      'an affinity config without affinity',
      svc('  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n  ports: [{port: 80}]'),
      /^spec\.sessionAffinityConfig: must not be set when spec\.sessionAffinity is None/,
    ],
    [
      'externalTrafficPolicy on a ClusterIP Service',
      svc('  externalTrafficPolicy: Local\n  ports: [{port: 80}]'),
      /^spec\.externalTrafficPolicy: may only be set for type NodePort/,
    ],
    [
      'a bad internalTrafficPolicy',
      svc('  internalTrafficPolicy: Node\n  ports: [{port: 80}]'),
      /^spec\.internalTrafficPolicy: must be Cluster or Local, not "Node"/,
    ],
    ['a name with capitals', svc('  ports: [{port: 80}]', 'name: Web'), /^metadata\.name: "Web" is not valid: must be a DNS label starting with a letter/],
    ['a name starting with a digit', svc('  ports: [{port: 80}]', 'name: 1web'), /^metadata\.name: "1web" is not valid/],
    ['a missing name', svc('  ports: [{port: 80}]', 'labels: {}'), /^metadata\.name: is required/],
    ['a bad namespace', svc('  ports: [{port: 80}]', 'name: web, namespace: Prod'), /^metadata\.namespace: "Prod" is not valid/],
    ['a bad label value', svc('  ports: [{port: 80}]', 'name: web, labels: {app: "a b"}'), /^metadata\.labels\["app"\]: "a b" is not a valid label value/],
    ['a bad selector key', svc('  selector: {"-app": web}\n  ports: [{port: 80}]'), /^spec\.selector\["-app"\]: "-app" is not a valid label key/],
    ['a numeric label value', svc('  ports: [{port: 80}]', 'name: web, labels: {v: 1}'), /^metadata\.labels\["v"\]: must be a string, not 1/],
    ['an unsupported field', svc('  externalIPs: [1.2.3.4]\n  ports: [{port: 80}]'), /^spec\.externalIPs: is not supported by weft/],
    ['no spec', 'apiVersion: v1\nkind: Service\nmetadata: {name: web}', /^spec: is required/],
    ['the wrong apiVersion', svc('  ports: [{port: 80}]').replace('v1', 'apps/v1'), /^apiVersion: must be v1 for kind Service, not "apps\/v1"/],
    [
      'an unknown kind',
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}',
      /^kind: "Deployment" is not supported; weft takes Service, EndpointSlice and Pod/,
    ],
    ['no kind', 'apiVersion: v1\nmetadata: {name: x}', /^kind: is required/],
    ['a list instead of an object', '- a\n- b', /^: must be a mapping/],
    ['broken YAML', 'kind: Service\n  metadata: [', /^: not valid YAML/],
    ['a duplicate key', 'kind: Service\nkind: Pod', /^: not valid YAML/],
    ['nothing at all', '# just a comment\n', /holds no documents/],
    [
      'a slice without its service label',
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: []',
      /kubernetes\.io\/service-name"\]: is required/,
    ],
    [
      'an IPv6 slice',
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv6',
      /^addressType: "IPv6" is not supported by weft; use IPv4/,
    ],
    [
      'a slice address that is not IPv4',
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [foo]}]',
      /^endpoints\[0\]\.addresses\[0\]: "foo" is not an IPv4 address/,
    ],
    [
      'a slice endpoint without addresses',
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: []}]',
      /^endpoints\[0\]\.addresses: must hold 1 to 100 addresses, not 0/,
    ],
    [
      'a slice port out of range',
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nports: [{port: 0}]',
      /^ports\[0\]\.port: 0 is out of range/,
    ],
    [
      'a ready terminating endpoint',
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: true, terminating: true}}]',
      /conditions\.ready: must be false for a terminating endpoint/,
    ],
    ['a pod without containers', 'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: n1}', /^spec\.containers: is required/],
    [
      'duplicate container port names',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, ports: [{name: http, containerPort: 80}, {name: http, containerPort: 81}]}]',
      /^spec\.containers\[0\]\.ports\[1\]\.name: duplicate container port name "http"/,
    ],
    [
      'a container port out of range',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, ports: [{containerPort: 65536}]}]',
      /^spec\.containers\[0\]\.ports\[0\]\.containerPort: 65536 is out of range/,
    ],
    [
      'hostNetwork',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: a}]',
      /^spec\.hostNetwork: is not supported by weft/,
    ],
    [
      'a hostPort',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, ports: [{containerPort: 80, hostPort: 80}]}]',
      /hostPort: is not supported by weft: use a NodePort Service/,
    ],
  ];
  for (const [what, text, re] of cases) it(`rejects ${what}`, () => one(text, re));

  it('names the file, the document number and line, the object and the field; lists every problem of every document', () => {
    const text = `${svc('  ports: [{port: 80}]')}\n---\n${svc('  ports: [{port: 70000}]', 'name: b')}\n---\n${svc('  ports: [{port: 80, nodePort: 1}]', 'name: c')}`;
    let err: ManifestError | undefined;
    try {
      parseManifests(text, 'web.yaml');
    } catch (e) {
      err = e as ManifestError;
    }
    assert.ok(err instanceof ManifestError);
    const lines = err.message.split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^web\.yaml: document 2 \(line 7, Service default\/b\): spec\.ports\[0\]\.port: 70000 is out of range; a port must be 1-65535$/);
    assert.match(lines[1]!, /^web\.yaml: document 3 \(line 13, Service default\/c\): spec\.ports\[0\]\.nodePort: may only be set for type NodePort/);
  });
});
