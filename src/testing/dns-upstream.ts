import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { decode, encode, type Answer, type Packet } from 'dns-packet';

/**
 * A tiny authoritative resolver for tests: fixed answers per name (any other name: NXDOMAIN with an
 * SOA), over UDP (truncated when over 512 bytes or the client's EDNS size) and TCP, counting the
 * questions it gets.
 */
export class TinyUpstream {
  readonly asked = new Map<string, number>();
  private udp: UdpSocket | undefined;
  private tcp: Server | undefined;
  port = 0;

  constructor(
    private readonly records: Record<string, Answer[]>,
    private readonly negativeTtl = 60,
  ) {}

  async start(address = '127.0.0.1', port = 0): Promise<void> {
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(port, address, r));
    this.port = udp.address().port;
    udp.on('message', (m, rinfo) => {
      const out = this.answer(m, true);
      if (out) udp.send(out, rinfo.port, rinfo.address);
    });
    const tcp = createServer((sock) => {
      let buf = Buffer.alloc(0);
      sock.on('error', () => sock.destroy());
      sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const out = this.answer(buf.subarray(2, 2 + buf.readUInt16BE(0)), false);
          buf = buf.subarray(2 + buf.readUInt16BE(0));
          if (!out) continue;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(out.length);
          sock.write(Buffer.concat([len, out]));
        }
      });
    });
    await new Promise<void>((r) => tcp.listen(this.port, address, r));
    this.udp = udp;
    this.tcp = tcp;
  }

  async stop(): Promise<void> {
    this.udp?.close();
    await new Promise((r) => (this.tcp ? this.tcp.close(r) : r(undefined)));
  }

  private answer(msg: Buffer, overUdp: boolean): Buffer | undefined {
    let q: Packet;
    try {
      q = decode(msg);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (!question) return undefined;
    const name = question.name.toLowerCase();
    this.asked.set(name, (this.asked.get(name) ?? 0) + 1);
    const known = this.records[name];
    const answers = (known ?? []).filter((a) => a.type === question.type);
    const opt = q.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
    const reply: Packet = {
      id: q.id,
      type: 'response',
      flags: 0x8180 | (known ? 0 : 3),
      questions: [question],
      answers,
      authorities: answers.length
        ? []
        : [
            {
              name: 'test',
              type: 'SOA',
              ttl: this.negativeTtl,
              data: { mname: 'ns.test', rname: 'root.test', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: this.negativeTtl },
            },
          ],
      ...(opt && { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as unknown as Answer] }),
    };
    const out = encode(reply);
    if (overUdp && out.length > (opt?.udpPayloadSize ?? 512))
      return encode({ ...reply, flags: (reply.flags ?? 0) | 0x0200, answers: [], authorities: [], additionals: [] });
    return out;
  }
}
