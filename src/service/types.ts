/**
 * Services, pods and endpoints as Weft keeps them: the parts of Kubernetes' v1 Service, Pod and
 * discovery.k8s.io/v1 EndpointSlice that pod networking needs, normalized (defaults filled in,
 * ClusterIP and NodePorts allocated). They live in etcd under Weft's own prefix (default `/weft`),
 * never under flannel's.
 */
export type Protocol = 'TCP' | 'UDP';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'ExternalName';
export type TrafficPolicy = 'Cluster' | 'Local';

export interface ServicePort {
  /** Required (and unique) when a Service has more than one port; '' otherwise. */
  name: string;
  protocol: Protocol;
  port: number;
  /** A port number, or the name of a container port of the selected pods. Defaults to `port`. */
  targetPort: number | string;
  /** NodePort Services only; allocated from 30000-32767 when the manifest has none. */
  nodePort?: number;
}

export interface Service {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  type: ServiceType;
  /** An IPv4 address in the service CIDR, or 'None' (headless). Absent for ExternalName. */
  clusterIP?: string;
  ports: ServicePort[];
  /** Absent: the Service's endpoints come from EndpointSlices named after it (label kubernetes.io/service-name). */
  selector?: Record<string, string>;
  sessionAffinity: 'None' | 'ClientIP';
  /** ClientIP affinity's timeout (Kubernetes' default 10800). */
  affinityTimeoutSeconds: number;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  /** ExternalName Services only. */
  externalName?: string;
  uid: string;
  creationTimestamp: string;
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol: Protocol;
}

/**
 * A pod: its spec part (labels, container ports, where it runs) is written by whoever creates it
 * (`weft lab apply`, `weft pod label`); its status part (IP, container ID) by the agent's CNI path
 * on ADD. A record without an IP is a pod that exists but has no network yet.
 */
export interface PodRecord {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  ports: ContainerPort[];
  /** spec.nodeName, or the node whose CNI ADD wired it. */
  node?: string;
  hostname?: string;
  ip?: string;
  containerID?: string;
  /** Readiness (`weft pod ready`); true when the pod is wired unless set otherwise. */
  ready: boolean;
  /** Being deleted: EndpointSlice's terminating condition. */
  terminating: boolean;
  uid: string;
  creationTimestamp: string;
}

/** One endpoint of a Service, flattened from EndpointSlice form: one address with its conditions and ports. */
export interface Endpoint {
  ip: string;
  nodeName?: string;
  hostname?: string;
  targetRef?: { kind: 'Pod'; namespace: string; name: string };
  /** EndpointSlice conditions: serving = ready regardless of terminating; ready = serving && !terminating. */
  conditions: { ready: boolean; serving: boolean; terminating: boolean };
  /** Per service port (by its name, '' for an unnamed one): the port this endpoint listens on. */
  ports: { name: string; port: number; protocol: Protocol }[];
}

/** An EndpointSlice from a manifest (Services without a selector), normalized. */
export interface EndpointSliceRecord {
  namespace: string;
  name: string;
  /** The `kubernetes.io/service-name` label. */
  serviceName: string;
  ports: { name: string; port: number; protocol: Protocol }[];
  endpoints: {
    addresses: string[];
    conditions: { ready: boolean; serving: boolean; terminating: boolean };
    nodeName?: string;
    hostname?: string;
  }[];
}

export const serviceKey = (s: { namespace: string; name: string }): string => `${s.namespace}/${s.name}`;
