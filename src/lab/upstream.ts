import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import * as packet from 'dns-packet';

/**
 * The outside world's DNS resolver: what a node's /etc/resolv.conf would name. It answers a few
 * names of its own (`example.test` → 203.0.113.1), NXDOMAIN for any other name, over UDP and TCP.
 * The nodes' cluster DNS forwards names outside the cluster zone here.
 */
export const UPSTREAM_NAMES: Record<string, string> = {
  'example.test': '203.0.113.1',
  'www.example.test': '203.0.113.1',
};
export const UPSTREAM_TTL = 30;
const NXDOMAIN = 3;
const SOA = { mname: 'ns.test', rname: 'hostmaster.test', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: UPSTREAM_TTL };

/** The answer to one query message (undefined: not a query we can parse; dropped). */
export function upstreamAnswer(query: Buffer, names: Record<string, string> = UPSTREAM_NAMES): Buffer | undefined {
  let q: packet.Packet;
  try {
    q = packet.decode(query);
  } catch {
    return undefined;
  }
  const question = q.questions?.[0];
  if (q.type !== 'query' || !question) return undefined;
  const name = question.name.toLowerCase().replace(/\.$/, '');
  const ip = names[name];
  const reply: packet.Packet = {
    type: 'response',
    id: q.id ?? 0,
    flags: packet.AUTHORITATIVE_ANSWER | packet.RECURSION_AVAILABLE | ((q.flags ?? 0) & packet.RECURSION_DESIRED) | (ip === undefined ? NXDOMAIN : 0),
    questions: [question],
    answers: ip !== undefined && question.type === 'A' ? [{ type: 'A', name: question.name, ttl: UPSTREAM_TTL, data: ip }] : [],
    authorities: ip !== undefined && question.type === 'A' ? [] : [{ type: 'SOA', name: 'test', ttl: UPSTREAM_TTL, data: SOA }],
  };
  return packet.encode(reply);
}

/** Serves on port 53 (or `port`) of every address of this namespace, UDP and TCP. */
export function serveUpstream(port = 53, names: Record<string, string> = UPSTREAM_NAMES): Promise<void> {
  const udp = createSocket('udp4');
  udp.on('message', (m, r) => {
    const a = upstreamAnswer(m, names);
    if (a) udp.send(a, r.port, r.address);
  });
  const tcp = createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const a = upstreamAnswer(buf.subarray(2, 2 + buf.readUInt16BE(0)), names);
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        if (!a) return void sock.destroy();
        const len = Buffer.alloc(2);
        len.writeUInt16BE(a.length);
        sock.write(Buffer.concat([len, a]));
      }
    });
  });
  return Promise.all([
    new Promise<void>((resolve, reject) => udp.once('error', reject).bind(port, '0.0.0.0', () => resolve())),
    new Promise<void>((resolve, reject) => tcp.once('error', reject).listen(port, '0.0.0.0', () => resolve())),
  ]).then(() => undefined);
}
