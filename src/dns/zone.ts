import type { Answer } from 'dns-packet';
import type { RegistryEvent } from '../service/cache.js';
import { endpointsOf, selects } from '../service/endpoints.js';
import { type EndpointSliceRecord, type PodRecord, type Service } from '../service/types.js';
import { QTYPE, RCODE } from './wire.js';

/** What the zone reads: RegistryCache's maps and events. */
export interface ZoneSource {
  readonly services: Map<string, Service>;
  readonly pods: Map<string, PodRecord>;
  readonly slices: Map<string, EndpointSliceRecord>;
  on(listener: (e: RegistryEvent) => void): () => unknown;
}

export interface ZoneOptions {
  source: ZoneSource;
  zone: string;
  ttl: number;
  live: (ip: string) => boolean;
  /** Names whose answers changed (records, or the name came or went). */
  changed: (name: string) => void;
}

/** An answer from the zone's data, before encoding. */
export interface Lookup {
  rcode: number;
  answers: Answer[];
  authorities: Answer[];
  /** The name is an alias (ExternalName) and the query asked for another type: the answer goes on at this target. */
  cname?: string;
}

/** Internal types: a name that exists without records, and a pod IP's PTR (used only when no Service record names the IP). */
const MARKER = -1;
const POD_PTR = -12;

interface Rec {
  name: string;
  type: number;
  /** Identifies the record within its name and type (two owners may publish the same record: it is counted). */
  key: string;
  rr?: Answer;
}

interface NameNode {
  sets: Map<number, Map<string, { rr: Answer | undefined; refs: number }>>;
  /** Records at names below this one: a name with only those is an empty non-terminal (NODATA, not NXDOMAIN). */
  below: number;
}

export const reverseName = (ip: string): string => `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
const dashed = (ip: string): string => ip.replaceAll('.', '-');
const POD_NAME = /^(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)$/;

/**
 * The cluster zone as a table of names, kept by the registry's events: each Service and each pod
 * owns a list of records, and an event replaces the lists of the owners it touches (a Service
 * change: that Service; a pod: its PTR and the headless Services of its namespace that select
 * it; a slice: its Service), so a change costs the size of what changed, not of the registry.
 * Pod A records `a-b-c-d.<ns>.pod.<zone>` are computed from the name (CoreDNS `pods insecure`).
 */
export class ClusterZone {
  private readonly names = new Map<string, NameNode>();
  private readonly owned = new Map<string, Rec[]>();
  private readonly podsByNs = new Map<string, Map<string, PodRecord>>();
  private readonly slicesByNs = new Map<string, Map<string, EndpointSliceRecord>>();
  /** Headless Services by namespace: the only ones whose records depend on endpoints. */
  private readonly headlessByNs = new Map<string, Set<string>>();
  private readonly suffix: string;
  private readonly soa: Answer;
  private records = 0;
  private unsubscribe: (() => unknown) | undefined;

  constructor(private readonly o: ZoneOptions) {
    this.suffix = `.${o.zone}`;
    this.soa = {
      name: o.zone,
      type: 'SOA',
      ttl: o.ttl,
      data: {
        mname: `ns.dns.${o.zone}`,
        rname: `hostmaster.${o.zone}`,
        serial: Math.floor(Date.now() / 1000),
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: o.ttl,
      },
    };
  }

  /** Builds the table from the source (synced) and follows its events. */
  start(): void {
    this.unsubscribe = this.o.source.on((e) => this.onEvent(e));
    this.rebuild();
  }

  stop(): void {
    this.unsubscribe?.();
  }

  /** Endpoint liveness may have changed: headless Services are recomputed. */
  leasesChanged(): void {
    for (const [ns, keys] of this.headlessByNs) for (const key of keys) this.updateService(key, ns);
  }

  get size(): { names: number; records: number; services: number } {
    return { names: this.names.size, records: this.records, services: this.o.source.services.size };
  }

  inZone(name: string): boolean {
    return name === this.o.zone || name.endsWith(this.suffix);
  }

  /** The answer from the table; undefined for a name outside the zone that the table does not hold (forward it). */
  lookup(name: string, qtype: number): Lookup | undefined {
    const node = this.names.get(name);
    if (!node) {
      if (!this.inZone(name)) return undefined;
      const pod = this.podAddress(name);
      if (pod === undefined) return this.negative(RCODE.NXDOMAIN);
      if (qtype === QTYPE.A || qtype === QTYPE.ANY)
        return { rcode: RCODE.NOERROR, answers: [{ name, type: 'A', ttl: this.o.ttl, data: pod }], authorities: [] };
      return this.negative(RCODE.NOERROR);
    }
    const cname = node.sets.get(QTYPE.CNAME);
    if (cname && qtype !== QTYPE.CNAME) {
      const rr = [...cname.values()][0]!.rr as Answer & { data: string };
      return { rcode: RCODE.NOERROR, answers: [rr], authorities: [], cname: rr.data };
    }
    const answers: Answer[] = [];
    const add = (type: number) => {
      for (const e of node.sets.get(type)?.values() ?? []) if (e.rr) answers.push(e.rr);
    };
    if (qtype === QTYPE.ANY) {
      for (const type of node.sets.keys()) if (type !== POD_PTR) add(type);
    } else add(qtype);
    if ((qtype === QTYPE.PTR || qtype === QTYPE.ANY) && !node.sets.has(QTYPE.PTR)) add(POD_PTR);
    if (answers.length === 0) return this.negative(RCODE.NOERROR);
    return { rcode: RCODE.NOERROR, answers, authorities: [] };
  }

  private negative(rcode: number): Lookup {
    return { rcode, answers: [], authorities: [this.soa] };
  }

  /** a.b.c.d for `a-b-c-d.<ns>.pod.<zone>`. */
  private podAddress(name: string): string | undefined {
    const podSuffix = `.pod${this.suffix}`;
    if (!name.endsWith(podSuffix)) return undefined;
    const m = POD_NAME.exec(name.slice(0, -podSuffix.length));
    if (!m || m.slice(1, 5).some((o) => Number(o) > 255)) return undefined;
    return m.slice(1, 5).map(Number).join('.');
  }

  private onEvent(e: RegistryEvent): void {
    if (e.kind === 'resync') {
      this.rebuild();
    } else if (e.kind === 'service') {
      const ns = (e.now ?? e.old)!.namespace;
      this.headlessByNs.get(ns)?.delete(e.key);
      if (e.now && e.now.clusterIP === 'None') headlessIn(this.headlessByNs, ns).add(e.key);
      this.updateService(e.key, ns);
    } else if (e.kind === 'pod') {
      const ns = (e.now ?? e.old)!.namespace;
      const pods = inNs(this.podsByNs, ns);
      if (e.now) pods.set(e.key, e.now);
      else pods.delete(e.key);
      this.updatePod(e.key);
      for (const key of this.headlessByNs.get(ns) ?? []) {
        const selector = this.o.source.services.get(key)?.selector;
        if (selector && [e.old, e.now].some((p) => p && selects(selector, p.labels))) this.updateService(key, ns);
      }
    } else if (e.kind === 'slice') {
      const s = (e.now ?? e.old)!;
      const slices = inNs(this.slicesByNs, s.namespace);
      if (e.now) slices.set(e.key, e.now);
      else slices.delete(e.key);
      for (const x of [e.old, e.now]) if (x) this.updateService(`${x.namespace}/${x.serviceName}`, x.namespace);
    }
  }

  private rebuild(): void {
    for (const owner of [...this.owned.keys()]) this.replace(owner, []);
    this.podsByNs.clear();
    this.slicesByNs.clear();
    this.headlessByNs.clear();
    const zone = this.o.zone;
    this.replace('zone', [
      this.rec(zone, QTYPE.SOA, 'soa', this.soa),
      this.rec(zone, QTYPE.NS, 'ns', { name: zone, type: 'NS', ttl: this.o.ttl, data: `ns.dns.${zone}` }),
      this.rec(`dns-version.${zone}`, QTYPE.TXT, '1.1.0', { name: `dns-version.${zone}`, type: 'TXT', ttl: this.o.ttl, data: '1.1.0' }),
      { name: `svc.${zone}`, type: MARKER, key: '' },
      { name: `pod.${zone}`, type: MARKER, key: '' },
    ]);
    const src = this.o.source;
    for (const [key, pod] of src.pods) inNs(this.podsByNs, pod.namespace).set(key, pod);
    for (const [key, slice] of src.slices) inNs(this.slicesByNs, slice.namespace).set(key, slice);
    for (const [key, svc] of src.services) if (svc.clusterIP === 'None') headlessIn(this.headlessByNs, svc.namespace).add(key);
    for (const [key, svc] of src.services) this.updateService(key, svc.namespace);
    for (const key of src.pods.keys()) this.updatePod(key);
  }

  private updateService(key: string, ns: string): void {
    const svc = this.o.source.services.get(key);
    this.replace(`svc:${key}`, svc ? this.serviceRecords(svc, ns) : []);
  }

  private updatePod(key: string): void {
    const pod = this.o.source.pods.get(key);
    if (!pod?.ip) {
      this.replace(`pod:${key}`, []);
      return;
    }
    const target = `${dashed(pod.ip)}.${pod.namespace}.pod.${this.o.zone}`;
    const name = reverseName(pod.ip);
    this.replace(`pod:${key}`, [this.rec(name, POD_PTR, target, { name, type: 'PTR', ttl: this.o.ttl, data: target })]);
  }

  private serviceRecords(svc: Service, ns: string): Rec[] {
    const base = `${svc.name}.${ns}.svc.${this.o.zone}`;
    const ttl = this.o.ttl;
    const out: Rec[] = [];
    const a = (name: string, ip: string) => out.push(this.rec(name, QTYPE.A, ip, { name, type: 'A', ttl, data: ip }));
    const ptr = (ip: string, target: string) => {
      const name = reverseName(ip);
      out.push(this.rec(name, QTYPE.PTR, target, { name, type: 'PTR', ttl, data: target }));
    };
    const srv = (portName: string, proto: string, port: number, target: string) => {
      const name = `_${portName}._${proto.toLowerCase()}.${base}`;
      out.push(this.rec(name, QTYPE.SRV, `${port} ${target}`, { name, type: 'SRV', ttl, data: { priority: 0, weight: 100, port, target } }));
    };
    if (svc.type === 'ExternalName') {
      const target = (svc.externalName ?? '').replace(/\.$/, '').toLowerCase();
      if (target) out.push(this.rec(base, QTYPE.CNAME, target, { name: base, type: 'CNAME', ttl, data: target }));
      return out;
    }
    if (svc.clusterIP && svc.clusterIP !== 'None') {
      a(base, svc.clusterIP);
      ptr(svc.clusterIP, base);
      for (const p of svc.ports) if (p.name) srv(p.name, p.protocol, p.port, base);
      return out;
    }
    out.push({ name: base, type: MARKER, key: '' });
    const view = { pods: this.podsByNs.get(ns)?.values() ?? [], slices: this.slicesByNs.get(ns)?.values() ?? [] };
    for (const ep of endpointsOf(svc, view, this.o.live)) {
      if (!ep.conditions.ready) continue;
      const host = `${ep.hostname ?? dashed(ep.ip)}.${base}`;
      a(base, ep.ip);
      a(host, ep.ip);
      ptr(ep.ip, host);
      for (const p of svc.ports) {
        const port = ep.ports.find((x) => x.name === p.name && x.protocol === p.protocol)?.port;
        if (p.name && port !== undefined) srv(p.name, p.protocol, port, host);
      }
    }
    return out;
  }

  private rec(name: string, type: number, key: string, rr: Answer): Rec {
    return { name, type, key, rr };
  }

  /** Replaces the records of `owner` with `recs`; adding before removing leaves records in both untouched (and their cached answers valid). */
  private replace(owner: string, recs: Rec[]): void {
    const old = this.owned.get(owner);
    for (const r of recs) this.add(r);
    if (old) for (const r of old) this.remove(r);
    if (recs.length) this.owned.set(owner, recs);
    else this.owned.delete(owner);
  }

  private add(r: Rec): void {
    const node = this.node(r.name);
    let set = node.sets.get(r.type);
    if (!set) node.sets.set(r.type, (set = new Map<string, { rr: Answer | undefined; refs: number }>()));
    const entry = set.get(r.key);
    if (entry) entry.refs++;
    else {
      set.set(r.key, { rr: r.rr, refs: 1 });
      this.records++;
      this.o.changed(r.name);
    }
    for (const parent of this.ancestors(r.name)) this.node(parent).below++;
  }

  private remove(r: Rec): void {
    const node = this.names.get(r.name)!;
    const set = node.sets.get(r.type)!;
    const entry = set.get(r.key)!;
    if (--entry.refs === 0) {
      set.delete(r.key);
      this.records--;
      if (set.size === 0) node.sets.delete(r.type);
      this.o.changed(r.name);
      this.prune(r.name, node);
    }
    for (const parent of this.ancestors(r.name)) {
      const p = this.names.get(parent)!;
      p.below--;
      this.prune(parent, p);
    }
  }

  private node(name: string): NameNode {
    let node = this.names.get(name);
    if (!node) {
      node = { sets: new Map(), below: 0 };
      this.names.set(name, node);
      this.o.changed(name);
    }
    return node;
  }

  private prune(name: string, node: NameNode): void {
    if (node.sets.size === 0 && node.below === 0) {
      this.names.delete(name);
      this.o.changed(name);
    }
  }

  /** The names between `name` and the zone apex (exclusive, inclusive); none outside the zone. */
  private *ancestors(name: string): Generator<string> {
    if (name === this.o.zone || !name.endsWith(this.suffix)) return;
    let rest = name;
    while (rest !== this.o.zone) {
      rest = rest.slice(rest.indexOf('.') + 1);
      yield rest;
    }
  }
}

function inNs<T>(map: Map<string, Map<string, T>>, ns: string): Map<string, T> {
  let m = map.get(ns);
  if (!m) map.set(ns, (m = new Map<string, T>()));
  return m;
}

function headlessIn(map: Map<string, Set<string>>, ns: string): Set<string> {
  let s = map.get(ns);
  if (!s) map.set(ns, (s = new Set()));
  return s;
}
