import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import { decode, encode, type Answer } from 'dns-packet';
import type { Logger } from '../agent/log.js';
import { contains, parseAddr, parseCidr, type Cidr } from '../ip/cidr.js';
import { Forwarder, served, type Upstream } from './forward.js';
import { assemble, CLASS_IN, EMPTY, errorBody, parseQuery, RCODE, udpLimit, type Body, type Query, type Rejection } from './wire.js';
import { ClusterZone, type Lookup, type ZoneSource } from './zone.js';

export { reverseName } from './zone.js';
export type { ZoneSource } from './zone.js';

export interface Listen {
  address: string;
  port: number;
}

export interface ClusterDnsOptions {
  /** The registry (RegistryCache, started and synced). */
  cache: ZoneSource;
  /** Default cluster.local. */
  zone?: string;
  /** TTL of every answer from the zone, and its negative TTL. Default 5. */
  ttl?: number;
  /** Resolvers for names outside the zone: 'ip' or 'ip:port'. Default: the nameservers of /etc/resolv.conf. */
  upstreams?: string[];
  /** Client ranges (CIDRs); queries from anywhere else are REFUSED. */
  allow: string[];
  /** Served over UDP and TCP each; port 0 picks a free port (the same for both). */
  listen: Listen[];
  /** Whether an endpoint IP counts (its node holds a lease); default all do. */
  live?: (ip: string) => boolean;
  log?: Logger;
  /** Called with the seconds from a query's arrival to its answer handed to the socket. */
  answered?: (seconds: number, protocol: 'udp' | 'tcp') => void;
}

export interface DnsStats {
  listen: Listen[];
  zone: string;
  upstreams: string[];
  queries: { udp: number; tcp: number };
  /** Responses by rcode name. */
  rcodes: Record<string, number>;
  /** Answers served from the encoded-answer cache of the zone. */
  zoneCacheHits: number;
  forwarded: number;
  forwardCache: { entries: number; hits: number; misses: number; failures: number };
  truncated: number;
  /** Packets not answered: too short to be a query, or a response. */
  dropped: number;
  refusedClients: number;
  tcpConnections: number;
  records: { names: number; records: number; services: number };
}

const RCODE_NAME: Record<number, string> = { 0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED', 16: 'BADVERS' };
const MAX_TCP_CONNECTIONS = 512;
const TCP_IDLE_MS = 10_000;
const MAX_MEMO = 100_000;
const MAX_CHASE = 8;

/** `ip` or `ip:port` (port 53 by default). */
export function parseUpstream(text: string): Upstream {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(text.trim());
  const port = Number(m?.[2] ?? 53);
  if (!m || !isIPv4(m[1]!) || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${text}" is not an upstream resolver (IPv4[:port])`);
  return { address: m[1]!, port };
}

/** The IPv4 nameservers of a resolv.conf. */
export function resolvConfUpstreams(path = '/etc/resolv.conf'): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!).filter((a) => isIPv4(a));
}

/**
 * The cluster DNS: answers the zone from the registry (see ClusterZone) and forwards the rest
 * (see Forwarder), over UDP and TCP on each listen address. Encoded answers of the zone are kept
 * per name and type until an event touches that name, so a repeated question costs a parse, a
 * map lookup and a copy.
 */
export class ClusterDns {
  private readonly zone: ClusterZone;
  private readonly forwarder: Forwarder;
  private readonly allow: Cidr[];
  private readonly allowed = new Map<string, boolean>();
  private readonly memo = new Map<string, Map<number, Body>>();
  private memoSize = 0;
  private readonly udp: UdpSocket[] = [];
  private readonly tcp: Server[] = [];
  private readonly conns = new Set<Socket>();
  private bound: Listen[] = [];
  private stopped = false;
  private nxdomain: Body | undefined;
  private nodata: Body | undefined;
  private readonly zoneName: string;
  private readonly counters = {
    udp: 0,
    tcp: 0,
    rcodes: {} as Record<string, number>,
    zoneCacheHits: 0,
    forwarded: 0,
    truncated: 0,
    dropped: 0,
    refusedClients: 0,
  };

  constructor(private readonly o: ClusterDnsOptions) {
    this.zoneName = (o.zone ?? 'cluster.local').toLowerCase().replace(/\.$/, '');
    this.allow = o.allow.map((c) => parseCidr(c.includes('/') ? c : `${c}/${c.includes(':') ? 128 : 32}`));
    const own = new Set(o.listen.map((l) => l.address));
    const upstreams = (o.upstreams ?? resolvConfUpstreams()).map(parseUpstream).filter((u) => !(own.has(u.address) && o.listen.some((l) => l.port === u.port)));
    this.forwarder = new Forwarder({ upstreams });
    this.zone = new ClusterZone({
      source: o.cache,
      zone: this.zoneName,
      ttl: o.ttl ?? 5,
      live: o.live ?? (() => true),
      changed: (name) => this.forget(name),
    });
  }

  /** Builds the zone and binds every listen address (UDP, then TCP on the same port); rejects if one cannot be bound. */
  async start(): Promise<void> {
    this.zone.start();
    try {
      for (const l of this.o.listen) this.bound.push(await this.listen(l));
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.o.log?.info('cluster DNS serving', { zone: this.zoneName, listen: this.bound.map((l) => `${l.address}:${l.port}`).join(' '), ...this.zone.size });
  }

  addresses(): Listen[] {
    return [...this.bound];
  }

  leasesChanged(): void {
    this.zone.leasesChanged();
  }

  stats(): DnsStats {
    const c = this.counters;
    const f = this.forwarder;
    return {
      listen: this.addresses(),
      zone: this.zoneName,
      upstreams: f.upstreams.map((u) => `${u.address}:${u.port}`),
      queries: { udp: c.udp, tcp: c.tcp },
      rcodes: { ...c.rcodes },
      zoneCacheHits: c.zoneCacheHits,
      forwarded: c.forwarded,
      forwardCache: { entries: f.entries, hits: f.hits, misses: f.misses, failures: f.failures },
      truncated: c.truncated,
      dropped: c.dropped,
      refusedClients: c.refusedClients,
      tcpConnections: this.conns.size,
      records: this.zone.size,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.zone.stop();
    this.forwarder.close();
    for (const s of this.udp) s.close();
    for (const c of this.conns) c.destroy();
    await Promise.all(this.tcp.map((s) => new Promise((r) => s.close(r))));
    this.udp.length = 0;
    this.tcp.length = 0;
    this.bound = [];
  }

  /**
   * The response to one message from `src`, or undefined when it deserves none. Never throws:
   * anything unexpected while answering becomes SERVFAIL.
   */
  respond(msg: Buffer, src: string, overUdp: boolean): Buffer | Promise<Buffer | undefined> | undefined {
    const parsed = parseQuery(msg);
    if (!parsed) {
      this.counters.dropped++;
      return undefined;
    }
    if ('reject' in parsed) return this.finish(msg, parsed.reject, errorBody(parsed.reject.rcode), overUdp);
    const q = parsed.query;
    try {
      if (!this.isAllowed(src)) {
        this.counters.refusedClients++;
        return this.finish(msg, q, errorBody(RCODE.REFUSED), overUdp);
      }
      const memo = this.memo.get(q.name)?.get(q.qtype);
      if (memo) {
        this.counters.zoneCacheHits++;
        return this.finish(msg, q, memo, overUdp);
      }
      const found = this.zone.lookup(q.name, q.qtype);
      if (!found) return this.forward(msg, q, overUdp);
      if (found.cname !== undefined) return this.chase(msg, q, found, overUdp);
      if (found.answers.length === 0) return this.finish(msg, q, this.negative(found), overUdp);
      const body = encodeBody(found);
      this.remember(q.name, q.qtype, body);
      return this.finish(msg, q, body, overUdp);
    } catch (err) {
      this.o.log?.warn('cluster DNS: answering failed', { name: q.name, type: q.qtype, error: (err as Error).message });
      return this.finish(msg, q, errorBody(RCODE.SERVFAIL), overUdp);
    }
  }

  private finish(msg: Buffer, q: Query | Rejection, body: Body, overUdp: boolean, limit = overUdp ? udpLimit(q.edns) : 65535): Buffer {
    const { bytes, truncated } = assemble(msg, q, body, limit);
    if (truncated) this.counters.truncated++;
    const name = RCODE_NAME[body.rcode] ?? String(body.rcode);
    this.counters.rcodes[name] = (this.counters.rcodes[name] ?? 0) + 1;
    return bytes;
  }

  private async forward(msg: Buffer, q: Query, overUdp: boolean): Promise<Buffer> {
    this.counters.forwarded++;
    try {
      const pending = this.forwarder.resolve(`${q.qtype}/${q.qclass}/${q.name}`, msg.subarray(12, q.questionEnd - 4), q.qtype, q.qclass);
      const f = pending instanceof Promise ? await pending : pending;
      const out = served(f, msg, q.questionEnd, q.edns !== undefined);
      if (overUdp && out.length > udpLimit(q.edns)) return this.finish(msg, q, errorBody(f.rcode), true, 0);
      const name = RCODE_NAME[f.rcode] ?? String(f.rcode);
      this.counters.rcodes[name] = (this.counters.rcodes[name] ?? 0) + 1;
      return out;
    } catch (err) {
      this.o.log?.debug('cluster DNS: forwarding failed', { name: q.name, error: (err as Error).message });
      return this.finish(msg, q, errorBody(RCODE.SERVFAIL), overUdp);
    }
  }

  /** An alias (ExternalName): the CNAME, then the target's answer from the zone or the upstreams. */
  private async chase(msg: Buffer, q: Query, first: Lookup, overUdp: boolean): Promise<Buffer> {
    const answers = [...first.answers];
    let authorities: Answer[] = [];
    let rcode: number = RCODE.NOERROR;
    let target = first.cname!;
    for (let depth = 0; depth < MAX_CHASE; depth++) {
      const l = this.zone.lookup(target, q.qtype);
      if (l) {
        answers.push(...l.answers);
        ({ rcode, authorities } = l);
        if (l.cname === undefined) break;
        target = l.cname;
        continue;
      }
      const wire = nameToWire(target);
      if (!wire) break;
      try {
        this.counters.forwarded++;
        const pending = this.forwarder.resolve(`${q.qtype}/${CLASS_IN}/${target}`, wire, q.qtype, CLASS_IN);
        const f = pending instanceof Promise ? await pending : pending;
        const elapsed = Math.floor((Date.now() - f.storedAt) / 1000);
        for (const a of decode(f.bytes).answers ?? []) answers.push({ ...a, ttl: Math.max(0, (a as { ttl?: number }).ttl ?? 0) - elapsed } as Answer);
        rcode = f.rcode;
      } catch (err) {
        this.o.log?.debug('cluster DNS: resolving an ExternalName target failed', { name: target, error: (err as Error).message });
      }
      break;
    }
    return this.finish(msg, q, encodeBody({ rcode, answers, authorities }), overUdp);
  }

  /** NXDOMAIN and NODATA bodies are the zone's SOA alone: encoded once each, whatever the name (random missing names would otherwise fill the cache). */
  private negative(found: Lookup): Body {
    if (found.rcode === RCODE.NXDOMAIN) return (this.nxdomain ??= encodeBody(found));
    return (this.nodata ??= encodeBody(found));
  }

  private remember(name: string, qtype: number, body: Body): void {
    if (this.memoSize >= MAX_MEMO) {
      this.memo.clear();
      this.memoSize = 0;
    }
    let m = this.memo.get(name);
    if (!m) this.memo.set(name, (m = new Map<number, Body>()));
    if (!m.has(qtype)) this.memoSize++;
    m.set(qtype, body);
  }

  private forget(name: string): void {
    const m = this.memo.get(name);
    if (!m) return;
    this.memoSize -= m.size;
    this.memo.delete(name);
  }

  private isAllowed(src: string): boolean {
    let ok = this.allowed.get(src);
    if (ok === undefined) {
      try {
        const a = parseAddr(src.startsWith('::ffff:') && src.includes('.') ? src.slice(7) : src);
        ok = this.allow.some((c) => c.family === a.family && contains(c, a));
      } catch {
        ok = false;
      }
      if (this.allowed.size >= 10_000) this.allowed.clear();
      this.allowed.set(src, ok);
    }
    return ok;
  }

  private async listen(l: Listen): Promise<Listen> {
    const udp = createSocket({ type: isIPv6(l.address) ? 'udp6' : 'udp4' });
    this.udp.push(udp);
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind({ address: l.address, port: l.port, exclusive: true }, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    udp.on('error', (err) => this.o.log?.warn('cluster DNS: UDP socket error', { error: err.message }));
    udp.on('message', (msg, rinfo) => {
      this.counters.udp++;
      const started = performance.now();
      const send = (b: Buffer | undefined) => {
        if (!b || this.stopped) return;
        udp.send(b, rinfo.port, rinfo.address);
        this.o.answered?.((performance.now() - started) / 1000, 'udp');
      };
      const out = this.respond(msg, rinfo.address, true);
      if (out instanceof Promise) void out.then(send);
      else send(out);
    });
    const port = udp.address().port;
    const tcp = createServer((sock) => this.onConnection(sock));
    this.tcp.push(tcp);
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen({ host: l.address, port, exclusive: true }, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
    tcp.on('error', (err) => this.o.log?.warn('cluster DNS: TCP server error', { error: err.message }));
    return { address: l.address, port };
  }

  /** DNS over TCP (RFC 7766): length-prefixed messages, pipelined, answered as they are ready; idle connections closed. */
  private onConnection(sock: Socket): void {
    if (this.conns.size >= MAX_TCP_CONNECTIONS) {
      sock.destroy();
      return;
    }
    this.conns.add(sock);
    sock.setNoDelay(true);
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => this.conns.delete(sock));
    const src = sock.remoteAddress ?? '';
    const send = (b: Buffer | undefined, started: number) => {
      if (!b || sock.destroyed) return;
      const framed = Buffer.allocUnsafe(2 + b.length);
      framed.writeUInt16BE(b.length, 0);
      b.copy(framed, 2);
      sock.write(framed);
      this.o.answered?.((performance.now() - started) / 1000, 'tcp');
    };
    let buf = EMPTY;
    sock.on('data', (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + msg.length);
        this.counters.tcp++;
        const started = performance.now();
        const out = this.respond(msg, src, false);
        if (out instanceof Promise) void out.then((b) => send(b, started));
        else send(out, started);
      }
    });
  }
}

/** The records of a lookup, encoded once by dns-packet (everything after the question). */
function encodeBody(l: Lookup): Body {
  const bytes = encode({ type: 'response', questions: [], answers: l.answers, authorities: l.authorities });
  return { rcode: l.rcode, authoritative: true, bytes: bytes.subarray(12), an: l.answers.length, ns: l.authorities.length, ar: 0 };
}

/** A name in wire form, or undefined if it is not a valid one. */
function nameToWire(name: string): Buffer | undefined {
  const labels = name ? name.split('.') : [];
  const parts: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(l, 'latin1');
    if (b.length === 0 || b.length > 63) return undefined;
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const wire = Buffer.concat(parts);
  return wire.length <= 255 ? wire : undefined;
}
