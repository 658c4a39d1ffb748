/**
 * What `weft trace` reports: the hops a real probe packet took from SRC to DST, each with what the
 * kernel decided there. `observed` hops come from the kernel's own tracing (nftables trace events,
 * conntrack, a route lookup made for that packet); `inferred` hops are computed from the state the
 * path crosses (a device's master, a VXLAN fdb entry) where the kernel gives no event.
 */
export type TraceProto = 'tcp' | 'udp' | 'icmp';

/** What SRC or DST named, resolved against the lab. */
export interface TraceEndpoint {
  kind: 'pod' | 'node' | 'service' | 'outside' | 'ip';
  /** As the user wrote it. */
  spec: string;
  /** The lab object's name (pod, node, `namespace/name` of a Service); absent for a bare IP. */
  name?: string;
  ip: string;
  /** The lab namespace the probe leaves from or arrives in, when Weft knows it. */
  ns?: string;
  /** The lab node a pod lives on (or the node itself). */
  node?: string;
}

export type HopKind = 'pod-eth0' | 'route' | 'veth' | 'bridge' | 'nft' | 'conntrack' | 'encap' | 'underlay' | 'decap' | 'deliver';

export interface TraceVerdict {
  /** `accept`, `drop`, `dnat`, `masquerade`, `continue`, `forward`, `deliver`, ... */
  action: string;
  /** For nftables: `family table chain` and the rule as nft prints it (handle included). */
  table?: string;
  chain?: string;
  rule?: string;
  handle?: number;
  /** A chain's policy decided, not a rule. */
  policy?: boolean;
}

export interface TraceHop {
  /** The lab namespace this happened in, by its lab role: `pod-1a`, `node1`, `underlay`, `outside`. */
  where: string;
  /** The lab node or pod name this hop belongs to, for drawing it (the web view keys on it). */
  at: { kind: 'pod' | 'node' | 'underlay' | 'outside' | 'etcd'; name: string };
  kind: HopKind;
  /** A device when the hop is on one (`eth0`, `vethab12cd34`, `cni0`, `flannel.1`). */
  dev?: string;
  /** One line a person reads: `route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink`. */
  summary: string;
  verdict?: TraceVerdict;
  /** The packet as seen here when it changed (after DNAT, masquerade, encapsulation). */
  packet?: {
    src: string;
    dst: string;
    proto: TraceProto;
    sport?: number;
    dport?: number;
    outer?: { src: string; dst: string; proto: 'udp'; dport: number; vni?: number };
  };
  observed: boolean;
  /** Where an observed hop's evidence came from (`nft monitor trace`, `conntrack`, `ip route get`), or why it is only inferred. */
  source: string;
}

export interface TraceResult {
  lab: string;
  backend: string;
  src: TraceEndpoint;
  dst: TraceEndpoint;
  proto: TraceProto;
  port?: number;
  /** For a Service: the endpoint the kernel's DNAT chose (from conntrack). */
  endpoint?: { ip: string; port?: number; pod?: string };
  hops: TraceHop[];
  /** `delivered`: the probe reached DST (and was answered, for tcp/udp); `dropped`: the last hop says where. */
  outcome: 'delivered' | 'dropped' | 'no-answer';
  /** When dropped: the rule, policy or missing route that dropped it, in one line. */
  droppedBy?: string;
  ms: number;
}

export interface TraceOptions {
  proto?: TraceProto;
  port?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}
