import { randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { connect } from 'node:net';
import { QTYPE, RCODE, skipName, UDP_MAX } from './wire.js';

export interface Upstream {
  address: string;
  port: number;
}

/** An upstream response as cached: the bytes, where their TTLs are, and how long they stay good. */
export interface Forwarded {
  bytes: Buffer;
  rcode: number;
  /** Offsets of the TTL fields of the records (OPT excluded). */
  ttls: number[];
  /** Offset of a trailing OPT record, for clients that sent none; -1 if there is none. */
  optAt: number;
  storedAt: number;
  /** Seconds the response may be served from the cache (0: not cached). */
  ttl: number;
}

export interface ForwarderOptions {
  upstreams: Upstream[];
  timeoutMs?: number;
  maxEntries?: number;
  /** Longest time an answer stays cached, whatever its TTL says. */
  maxTtl?: number;
}

class BadResponse extends Error {}

/**
 * Resolves names outside the zone through upstream resolvers (in order, the next on a timeout,
 * SERVFAIL or REFUSED; over TCP when a UDP answer comes truncated) and caches what they answer
 * for as long as its TTLs say: positive answers for the smallest TTL of their records, negative
 * ones for the SOA's negative TTL (RFC 2308), failures not at all. Identical questions in flight
 * share one upstream query. A reply counts only from the upstream asked, with the ID and question sent.
 */
export class Forwarder {
  private socket: Socket | undefined;
  private readonly pending = new Map<number, { upstream: Upstream; question: Buffer; done: (b: Buffer) => void }>();
  private readonly cache = new Map<string, Forwarded>();
  private readonly inflight = new Map<string, Promise<Forwarded>>();
  private readonly timeoutMs: number;
  private readonly maxEntries: number;
  private readonly maxTtl: number;
  hits = 0;
  misses = 0;
  failures = 0;

  constructor(private readonly o: ForwarderOptions) {
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.maxEntries = o.maxEntries ?? 10_000;
    this.maxTtl = o.maxTtl ?? 3600;
  }

  get entries(): number {
    return this.cache.size;
  }

  get upstreams(): Upstream[] {
    return this.o.upstreams;
  }

  /** The cached or fresh upstream answer to the question (`qname` in wire form, `key` its lowercase text with type and class). */
  resolve(key: string, qname: Buffer, qtype: number, qclass: number): Forwarded | Promise<Forwarded> {
    const hit = this.cache.get(key);
    if (hit && (Date.now() - hit.storedAt) / 1000 < hit.ttl) {
      this.hits++;
      return hit;
    }
    if (hit) this.cache.delete(key);
    let p = this.inflight.get(key);
    if (!p) {
      this.misses++;
      p = this.ask(qname, qtype, qclass).then(
        (f) => {
          this.inflight.delete(key);
          if (f.ttl > 0) {
            if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
            this.cache.set(key, f);
          }
          return f;
        },
        (err: unknown) => {
          this.inflight.delete(key);
          this.failures++;
          throw err;
        },
      );
      this.inflight.set(key, p);
    }
    return p;
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
    for (const p of this.pending.values()) p.done(Buffer.alloc(0));
    this.pending.clear();
  }

  private async ask(qname: Buffer, qtype: number, qclass: number): Promise<Forwarded> {
    if (this.o.upstreams.length === 0) throw new Error('no upstream resolvers');
    let last: Error | undefined;
    for (const upstream of this.o.upstreams) {
      try {
        let f = await this.udp(upstream, qname, qtype, qclass);
        if (f === 'truncated') f = await this.tcp(upstream, qname, qtype, qclass);
        if (f.rcode === RCODE.SERVFAIL || f.rcode === RCODE.REFUSED) {
          last = new Error(`${upstream.address}:${upstream.port} answered rcode ${f.rcode}`);
          continue;
        }
        return f;
      } catch (err) {
        last = err as Error;
      }
    }
    throw last ?? new Error('no upstream answered');
  }

  private query(id: number, qname: Buffer, qtype: number, qclass: number): Buffer {
    const q = Buffer.alloc(12 + qname.length + 4 + 11);
    q.writeUInt16BE(id, 0);
    q.writeUInt16BE(0x0100, 2);
    q.writeUInt16BE(1, 4);
    q.writeUInt16BE(1, 10);
    qname.copy(q, 12);
    let pos = 12 + qname.length;
    q.writeUInt16BE(qtype, pos);
    q.writeUInt16BE(qclass, pos + 2);
    pos += 4;
    q.writeUInt16BE(QTYPE.OPT, pos + 1);
    q.writeUInt16BE(UDP_MAX, pos + 3);
    return q;
  }

  private udp(upstream: Upstream, qname: Buffer, qtype: number, qclass: number): Promise<Forwarded | 'truncated'> {
    const socket = this.udpSocket();
    let id = randomInt(65536);
    while (this.pending.has(id)) id = (id + 1) & 0xffff;
    const query = this.query(id, qname, qtype, qclass);
    const question = query.subarray(12, 12 + qname.length + 4);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${upstream.address}:${upstream.port} did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, {
        upstream,
        question,
        done: (bytes) => {
          clearTimeout(timer);
          this.pending.delete(id);
          if (bytes.length === 0) return reject(new Error('forwarder closed'));
          if (bytes.readUInt16BE(2) & 0x0200) return resolve('truncated');
          try {
            resolve(examine(bytes, this.maxTtl));
          } catch (err) {
            reject(err instanceof Error ? err : new BadResponse(String(err)));
          }
        },
      });
      socket.send(query, upstream.port, upstream.address, (err) => {
        if (err) this.pending.get(id)?.done(Buffer.alloc(0));
      });
    });
  }

  private udpSocket(): Socket {
    if (this.socket) return this.socket;
    const socket = createSocket('udp4');
    socket.on('error', () => undefined);
    socket.on('message', (msg, rinfo) => {
      if (msg.length < 12) return;
      const p = this.pending.get(msg.readUInt16BE(0));
      if (!p || rinfo.address !== p.upstream.address || rinfo.port !== p.upstream.port || !sameQuestion(msg, p.question)) return;
      p.done(msg);
    });
    socket.unref();
    this.socket = socket;
    return socket;
  }

  private tcp(upstream: Upstream, qname: Buffer, qtype: number, qclass: number): Promise<Forwarded> {
    const query = this.query(randomInt(65536), qname, qtype, qclass);
    return new Promise((resolve, reject) => {
      const sock = connect({ host: upstream.address, port: upstream.port });
      let buf = Buffer.alloc(0);
      const fail = (err: Error) => {
        sock.destroy();
        reject(err instanceof Error ? err : new BadResponse(String(err)));
      };
      sock.setTimeout(this.timeoutMs, () => fail(new Error(`${upstream.address}:${upstream.port} did not answer over TCP within ${this.timeoutMs} ms`)));
      sock.on('error', fail);
      sock.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(query.length);
        sock.write(Buffer.concat([len, query]));
      });
      sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        sock.destroy();
        if (msg.length < 12 || msg.readUInt16BE(0) !== query.readUInt16BE(0) || !sameQuestion(msg, query.subarray(12, 12 + qname.length + 4)))
          return reject(new BadResponse(`${upstream.address}:${upstream.port} answered another question over TCP`));
        try {
          resolve(examine(Buffer.from(msg), this.maxTtl));
        } catch (err) {
          reject(err instanceof Error ? err : new BadResponse(String(err)));
        }
      });
      sock.on('end', () => fail(new BadResponse(`${upstream.address}:${upstream.port} closed the TCP connection without an answer`)));
    });
  }
}

/** Whether the response's question (case aside) is the one sent. */
function sameQuestion(msg: Buffer, question: Buffer): boolean {
  if (msg.length < 12 + question.length || msg.readUInt16BE(4) !== 1) return false;
  for (let i = 0; i < question.length; i++) {
    let a = msg[12 + i]!;
    let b = question[i]!;
    if (a >= 0x41 && a <= 0x5a) a += 32;
    if (b >= 0x41 && b <= 0x5a) b += 32;
    if (a !== b) return false;
  }
  return true;
}

/** Walks an upstream response once: TTL offsets, a trailing OPT, and how long it may be cached. */
export function examine(bytes: Buffer, maxTtl: number): Forwarded {
  try {
    const rcode = bytes.readUInt16BE(2) & 15;
    const an = bytes.readUInt16BE(6);
    const ns = bytes.readUInt16BE(8);
    const ar = bytes.readUInt16BE(10);
    let pos = 12;
    for (let i = bytes.readUInt16BE(4); i > 0; i--) pos = skipName(bytes, pos) + 4;
    const ttls: number[] = [];
    let optAt = -1;
    let answerTtl = Infinity;
    let negativeTtl = Infinity;
    for (let i = 0; i < an + ns + ar; i++) {
      const start = pos;
      pos = skipName(bytes, pos);
      const type = bytes.readUInt16BE(pos);
      const ttl = bytes.readUInt32BE(pos + 4);
      const rdlen = bytes.readUInt16BE(pos + 8);
      const end = pos + 10 + rdlen;
      if (end > bytes.length) throw new BadResponse('a record runs past the end');
      if (type === QTYPE.OPT) {
        if (i === an + ns + ar - 1) optAt = start;
      } else {
        ttls.push(pos + 4);
        if (i < an) answerTtl = Math.min(answerTtl, ttl);
        else if (i < an + ns && type === QTYPE.SOA && rdlen >= 20) negativeTtl = Math.min(ttl, bytes.readUInt32BE(end - 4));
      }
      pos = end;
    }
    const negative = rcode === RCODE.NXDOMAIN || (rcode === RCODE.NOERROR && an === 0);
    const ttl = rcode !== RCODE.NOERROR && rcode !== RCODE.NXDOMAIN ? 0 : negative ? negativeTtl : answerTtl;
    return { bytes, rcode, ttls, optAt, storedAt: Date.now(), ttl: Number.isFinite(ttl) ? Math.min(ttl, maxTtl) : 0 };
  } catch (err) {
    if (err instanceof BadResponse) throw err;
    throw new BadResponse('malformed upstream response');
  }
}

/**
 * The cached response made the client's: its ID and question bytes, TTLs less the time spent in
 * the cache, and no OPT record if the client sent none.
 */
export function served(f: Forwarded, query: Buffer, questionEnd: number, edns: boolean): Buffer {
  const end = !edns && f.optAt >= 0 ? f.optAt : f.bytes.length;
  const out = Buffer.from(f.bytes.subarray(0, end));
  query.copy(out, 0, 0, 2);
  if (questionEnd - 12 === skipName(f.bytes, 12) + 4 - 12) query.copy(out, 12, 12, questionEnd);
  out.writeUInt16BE((out.readUInt16BE(2) & ~0x0100) | (query.readUInt16BE(2) & 0x0100), 2);
  if (end !== f.bytes.length) out.writeUInt16BE(out.readUInt16BE(10) - 1, 10);
  const elapsed = Math.floor((Date.now() - f.storedAt) / 1000);
  if (elapsed > 0) for (const at of f.ttls) if (at < end) out.writeUInt32BE(Math.max(0, f.bytes.readUInt32BE(at) - elapsed), at);
  return out;
}
