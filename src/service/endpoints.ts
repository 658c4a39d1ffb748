import type { Endpoint, EndpointSliceRecord, PodRecord, Service } from './types.js';

export interface EndpointView {
  pods: Iterable<PodRecord>;
  slices: Iterable<EndpointSliceRecord>;
}

/** Whether a selector (a Service's) matches labels: every key present with the same value. */
export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/**
 * A Service's endpoints, as the EndpointSlice controller would publish them. With a selector: the
 * pods of its namespace that match, have an IP, and whose IP `live` accepts (the node's lease still
 * exists); conditions from the pod (serving = ready, ready = serving and not terminating). Each
 * endpoint carries one port per Service port; a named targetPort resolves through the pod's
 * container ports (name and protocol), and a pod without that port is left out of that port.
 * Without a selector: the addresses of the EndpointSlices labelled with the Service's name.
 * Headless and ExternalName Services get endpoints too (DNS uses them).
 */
export function endpointsOf(svc: Service, view: EndpointView, live: (ip: string) => boolean = () => true): Endpoint[] {
  return svc.selector ? fromPods(svc, svc.selector, view.pods, live) : fromSlices(svc, view.slices, live);
}

function fromPods(svc: Service, selector: Record<string, string>, pods: Iterable<PodRecord>, live: (ip: string) => boolean): Endpoint[] {
  const out: Endpoint[] = [];
  for (const pod of pods) {
    if (pod.namespace !== svc.namespace || pod.ip === undefined || !selects(selector, pod.labels) || !live(pod.ip)) continue;
    const ports: Endpoint['ports'] = [];
    for (const sp of svc.ports) {
      const port =
        typeof sp.targetPort === 'number' ? sp.targetPort : pod.ports.find((cp) => cp.name === sp.targetPort && cp.protocol === sp.protocol)?.containerPort;
      if (port !== undefined) ports.push({ name: sp.name, port, protocol: sp.protocol });
    }
    if (ports.length === 0 && svc.ports.length > 0) continue;
    const serving = pod.ready;
    out.push({
      ip: pod.ip,
      ...(pod.node !== undefined && { nodeName: pod.node }),
      ...(pod.hostname !== undefined && { hostname: pod.hostname }),
      targetRef: { kind: 'Pod', namespace: pod.namespace, name: pod.name },
      conditions: { ready: serving && !pod.terminating, serving, terminating: pod.terminating },
      ports,
    });
  }
  return sortedByIp(out);
}

function fromSlices(svc: Service, slices: Iterable<EndpointSliceRecord>, live: (ip: string) => boolean): Endpoint[] {
  const byIp = new Map<string, Endpoint>();
  for (const slice of slices) {
    if (slice.namespace !== svc.namespace || slice.serviceName !== svc.name) continue;
    // A slice port serves the Service port of the same name (and protocol); an unnamed one the unnamed port.
    const ports = slice.ports.filter((p) => svc.ports.some((sp) => sp.name === p.name && sp.protocol === p.protocol));
    for (const e of slice.endpoints) {
      for (const ip of e.addresses) {
        if (!live(ip)) continue;
        const prev = byIp.get(ip);
        if (prev) {
          for (const p of ports) if (!prev.ports.some((q) => q.name === p.name && q.protocol === p.protocol)) prev.ports.push({ ...p });
          continue;
        }
        byIp.set(ip, {
          ip,
          ...(e.nodeName !== undefined && { nodeName: e.nodeName }),
          ...(e.hostname !== undefined && { hostname: e.hostname }),
          conditions: { ...e.conditions },
          ports: ports.map((p) => ({ ...p })),
        });
      }
    }
  }
  return sortedByIp([...byIp.values()]);
}

/** The Services (with a selector) whose endpoints may include `pod`: same namespace, selector matches its labels. */
export function servicesSelecting(pod: PodRecord, services: Iterable<Service>): Service[] {
  const out: Service[] = [];
  for (const s of services) if (s.selector && s.namespace === pod.namespace && selects(s.selector, pod.labels)) out.push(s);
  return out;
}

export function ipToInt(ip: string): number {
  const [a = 0, b = 0, c = 0, d = 0] = ip.split('.').map(Number);
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Sorted by IP, each parsed once: a sort compares n log n times, and a Service of 1,000 endpoints is re-sorted on every change of its pods. */
function sortedByIp<T extends { ip: string }>(list: T[]): T[] {
  return list
    .map((e) => ({ key: ipToInt(e.ip), e }))
    .sort((x, y) => x.key - y.key)
    .map((x) => x.e);
}
