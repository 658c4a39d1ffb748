import { DEFAULT_CLUSTER_DNS } from '../agent/dns.js';
import { parseManifests } from '../service/manifest.js';
import { formatLabels, formatPorts, type RegistrySession } from './registry.js';
import type { DemoService } from './state.js';

/**
 * What `lab up` writes to the registry: before it makes its pods the kube-dns Service and each pod's spec (label app=echo,
 * container ports http 80/TCP and udp 80/UDP, its node), after them one Service `echo` over them. The same
 * Kubernetes manifests a user would apply, so they pass the same validation.
 */
export const DEMO_LABEL = { app: 'echo' };

export function demoManifests(pods: { pod: string; node: string }[]): object[] {
  return [...podManifests(pods), echoManifest()];
}

function podManifests(pods: { pod: string; node: string }[]): object[] {
  return pods.map(({ pod, node }) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod, namespace: 'default', labels: DEMO_LABEL },
    spec: {
      nodeName: node,
      containers: [
        {
          name: 'app',
          ports: [
            { name: 'http', containerPort: 80, protocol: 'TCP' },
            { name: 'udp', containerPort: 80, protocol: 'UDP' },
          ],
        },
      ],
    },
  }));
}

function echoManifest(): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'echo', namespace: 'default' },
    spec: {
      selector: DEMO_LABEL,
      ports: [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' },
        { name: 'udp', protocol: 'UDP', port: 80, targetPort: 'udp' },
      ],
    },
  };
}

/**
 * The cluster DNS Service as in every Kubernetes cluster: every node's agent serves its ClusterIP
 * itself (node-local), and a node without Weft's DNS reaches it through the service proxy.
 */
export function kubeDnsManifest(clusterIP: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
    spec: {
      selector: { 'k8s-app': 'kube-dns' },
      clusterIP,
      ports: [
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 },
        { name: 'dns-tcp', protocol: 'TCP', port: 53, targetPort: 53 },
      ],
    },
  };
}

/** JSON documents are YAML too: one per `---`. */
export const manifestText = (docs: object[]) => docs.map((d) => JSON.stringify(d)).join('\n---\n');

/**
 * Before the pods are made, in the registry process `lab up` started ahead of etcd: the kube-dns
 * Service, then each pod's spec (so its ADD finds its labels).
 */
export async function writePodSpecs(registry: RegistrySession, pods: { pod: string; node: string }[]): Promise<void> {
  // kube-dns first and alone, so that no Service allocated at random can take its address.
  const kubeDns = { op: 'apply', docs: parseManifests(manifestText([kubeDnsManifest(DEFAULT_CLUSTER_DNS)]), 'lab up') } as const;
  if (!pods.length) await registry.call(kubeDns);
  else await registry.call(kubeDns, { op: 'apply', docs: parseManifests(manifestText(podManifests(pods)), 'lab up') });
}

/**
 * After the pods are made: the Service echo over them; returns it as the summary shows it. Written
 * last because an agent rewrites a Service's rules whenever one of its endpoints changes: with the
 * Service there first, each pod's registration made every agent rewrite echo over all the pods so far
 * (at 100 × 10: 100 agents × 1,000 registrations, up to ~4,000 nft ops each; pods came up at 0.4 a
 * second). Written after, each agent computes it once.
 */
export async function writeEchoService(registry: RegistrySession): Promise<DemoService> {
  const [r] = await registry.call({ op: 'apply', docs: parseManifests(manifestText([echoManifest()]), 'lab up') });
  const svc = r.services.find((x) => x.name === 'echo')!;
  return { namespace: svc.namespace, name: svc.name, clusterIP: svc.clusterIP ?? '', ports: formatPorts(svc), selector: formatLabels(svc.selector) };
}
