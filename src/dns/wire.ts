/**
 * The hand-written part of the wire format: reading a query's header, question and EDNS OPT
 * (every query passes here, and a malformed one must cost nothing), and assembling a response
 * from a header, the query's own question bytes and a body of records that dns-packet encoded
 * once. Records themselves are encoded by dns-packet (see records.ts).
 */

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;
export const QTYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;

const QR = 0x8000;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;
const CD = 0x0010;
const MAX_NAME = 255;
/** The UDP payload size this server advertises and answers within (DNS flag day 2020). */
export const UDP_MAX = 1232;

export interface Edns {
  size: number;
  version: number;
}

export interface Query {
  id: number;
  flags: number;
  /** Presentation form, lowercase, no trailing dot ('' for the root); unusual bytes escaped as \DDD. */
  name: string;
  qtype: number;
  qclass: number;
  /** End of the question in the packet: bytes 12..questionEnd are echoed in the response. */
  questionEnd: number;
  edns?: Edns;
}

/** A query that cannot be answered normally: the rcode to answer with, and what of the query could be read. */
export interface Rejection {
  id: number;
  flags: number;
  rcode: number;
  /** 12 when the question could not be read (the response then carries none). */
  questionEnd: number;
  edns?: Edns;
}

export type Parsed = { query: Query } | { reject: Rejection } | undefined;

class Malformed extends Error {}

/**
 * Reads a query. Undefined: not worth an answer (shorter than a header, or a response: answering
 * those could make two servers ping-pong). Rejection: answer with its rcode.
 */
export function parseQuery(buf: Buffer): Parsed {
  if (buf.length < 12) return undefined;
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & QR) return undefined;
  const reject = (rcode: number, questionEnd = 12, edns?: Edns): Parsed => ({ reject: { id, flags, rcode, questionEnd, ...(edns && { edns }) } });
  if (((flags >> 11) & 15) !== 0) return reject(RCODE.NOTIMP);
  if (buf.readUInt16BE(4) !== 1) return reject(RCODE.FORMERR);
  let name: string;
  let pos: number;
  try {
    [name, pos] = readQuestionName(buf, 12);
  } catch {
    return reject(RCODE.FORMERR);
  }
  if (pos + 4 > buf.length) return reject(RCODE.FORMERR);
  const qtype = buf.readUInt16BE(pos);
  const qclass = buf.readUInt16BE(pos + 2);
  const questionEnd = pos + 4;
  let edns: Edns | undefined;
  try {
    edns = readEdns(buf, questionEnd);
  } catch {
    return reject(RCODE.FORMERR, questionEnd);
  }
  if (edns && edns.version > 0) return reject(RCODE.BADVERS, questionEnd, edns);
  if (qtype === QTYPE.IXFR || qtype === QTYPE.AXFR) return reject(RCODE.NOTIMP, questionEnd, edns);
  if (qtype === 0 || qtype === QTYPE.OPT) return reject(RCODE.FORMERR, questionEnd, edns);
  if (qclass !== CLASS_IN && qclass !== CLASS_ANY) return reject(RCODE.REFUSED, questionEnd, edns);
  return { query: { id, flags, name, qtype, qclass, questionEnd, ...(edns && { edns }) } };
}

/** The question's name: no compression (nothing before it to point at), at most 255 bytes. */
function readQuestionName(buf: Buffer, start: number): [string, number] {
  let pos = start;
  let name = '';
  for (;;) {
    if (pos >= buf.length) throw new Malformed();
    const len = buf[pos]!;
    if (len === 0) break;
    if (len > 63 || pos + 1 + len - start >= MAX_NAME || pos + 1 + len > buf.length) throw new Malformed();
    const label = labelText(buf, pos + 1, pos + 1 + len);
    name = name ? `${name}.${label}` : label;
    pos += 1 + len;
  }
  return [name, pos + 1];
}

const PLAIN = /^[\x21-\x2d\x2f-\x5b\x5d-\x7e]*$/;

function labelText(buf: Buffer, start: number, end: number): string {
  const text = buf.toString('latin1', start, end).toLowerCase();
  if (PLAIN.test(text)) return text;
  let out = '';
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === 0x2e || b === 0x5c) out += `\\${String.fromCharCode(b)}`;
    else if (b < 0x21 || b > 0x7e) out += `\\${String(b).padStart(3, '0')}`;
    else out += String.fromCharCode(b).toLowerCase();
  }
  return out;
}

/** Skips the answer and authority records after the question and returns the OPT record of the additional section, if any. */
function readEdns(buf: Buffer, start: number): Edns | undefined {
  const before = buf.readUInt16BE(6) + buf.readUInt16BE(8);
  const additional = buf.readUInt16BE(10);
  let pos = start;
  let edns: Edns | undefined;
  for (let i = 0; i < before + additional; i++) {
    const nameStart = pos;
    pos = skipName(buf, pos);
    if (pos + 10 > buf.length) throw new Malformed();
    const type = buf.readUInt16BE(pos);
    const rdEnd = pos + 10 + buf.readUInt16BE(pos + 8);
    if (rdEnd > buf.length) throw new Malformed();
    if (type === QTYPE.OPT) {
      if (i < before || edns || buf[nameStart] !== 0) throw new Malformed();
      edns = { size: buf.readUInt16BE(pos + 2), version: buf[pos + 5]! };
    }
    pos = rdEnd;
  }
  return edns;
}

/** The offset after a name (a pointer ends it: skipping never follows one, so loops cannot happen). */
export function skipName(buf: Buffer, start: number): number {
  let pos = start;
  for (;;) {
    if (pos >= buf.length) throw new Malformed();
    const len = buf[pos]!;
    if (len === 0) return pos + 1;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 2 > buf.length) throw new Malformed();
      return pos + 2;
    }
    if (len > 63) throw new Malformed();
    pos += 1 + len;
  }
}

/** A body of records (everything after the question), as records.ts encodes it. */
export interface Body {
  rcode: number;
  authoritative: boolean;
  bytes: Buffer;
  an: number;
  ns: number;
  ar: number;
}

export const EMPTY = Buffer.alloc(0);

function optRecord(extendedRcode: number): Buffer {
  const b = Buffer.alloc(11);
  b.writeUInt16BE(QTYPE.OPT, 1);
  b.writeUInt16BE(UDP_MAX, 3);
  b[5] = extendedRcode;
  return b;
}

const OPT_PLAIN = optRecord(0);

/** The largest response the client takes over UDP. */
export const udpLimit = (edns: Edns | undefined): number => (edns ? Math.min(Math.max(edns.size, 512), UDP_MAX) : 512);

/**
 * The response to `q` (read from `query`): header, the query's question bytes (its case kept),
 * the body and, when the query had EDNS, an OPT record. Over UDP a response longer than `limit`
 * goes out with TC and no records, so the client asks again over TCP.
 */
export function assemble(query: Buffer, q: Query | Rejection, body: Body, limit = Infinity): { bytes: Buffer; truncated: boolean } {
  const question = q.questionEnd - 12;
  const opt = q.edns ? (body.rcode > 15 ? optRecord(body.rcode >> 4) : OPT_PLAIN) : EMPTY;
  let len = 12 + question + body.bytes.length + opt.length;
  const truncated = len > limit;
  const records = truncated ? EMPTY : body.bytes;
  if (truncated) len = 12 + question + opt.length;
  const out = Buffer.allocUnsafe(len);
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE(QR | (body.authoritative ? AA : 0) | (truncated ? TC : 0) | (q.flags & (RD | CD)) | RA | (body.rcode & 15), 2);
  out.writeUInt16BE(question > 0 ? 1 : 0, 4);
  out.writeUInt16BE(truncated ? 0 : body.an, 6);
  out.writeUInt16BE(truncated ? 0 : body.ns, 8);
  out.writeUInt16BE((truncated ? 0 : body.ar) + (opt.length ? 1 : 0), 10);
  query.copy(out, 12, 12, q.questionEnd);
  records.copy(out, 12 + question);
  opt.copy(out, 12 + question + records.length);
  return { bytes: out, truncated };
}

export const errorBody = (rcode: number): Body => ({ rcode, authoritative: false, bytes: EMPTY, an: 0, ns: 0, ar: 0 });
