import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  coalescibleTcp,
  completeChecksum,
  decrementTtl,
  dstOf,
  icmpNetUnreachable,
  internetChecksum,
  ipToU32,
  ipv4Length,
  mayAnswerWithIcmpError,
  PeerTable,
  segmentTcp,
  srcOf,
  TcpCoalescer,
  u32ToIp,
} from './udp-packet.js';
import { readPeers, writePeers, controlBytes } from './udp-shared.js';
import { Checksummer, CSUM_MEMORY_BYTES } from './udp-csum.js';

const csum = new Checksummer();

/**
 * segmentTcp as the tx loop runs it: the packet in the checksum module's memory (at an odd-looking
 * offset, as after a virtio header), and each segment put together from its header and its slice.
 */
function segment(sp: Buffer, mss: number): Buffer[] {
  const at = 10;
  sp.copy(csum.mem, at);
  const b = csum.mem.subarray(at);
  const hdrs = Buffer.alloc(65536);
  const r = { count: 0, hl: 0, mss: 0, bytes: 0 };
  segmentTcp(b, sp.length, mss, csum.sum, hdrs, r);
  const segs: Buffer[] = [];
  for (let i = 0; i < r.count; i++) {
    const from = r.hl + i * mss;
    segs.push(Buffer.concat([hdrs.subarray(i * r.hl, (i + 1) * r.hl), b.subarray(from, Math.min(from + mss, sp.length))]));
  }
  assert.equal(
    segs.reduce((a, x) => a + x.length, 0),
    r.bytes,
  );
  return segs;
}

/** A UDP-in-IPv4 packet with a correct header checksum. */
function packet(src: string, dst: string, opts: { ttl?: number; proto?: number; payload?: Buffer; ihl?: number; frag?: number } = {}): Buffer {
  const ihl = opts.ihl ?? 5;
  const payload = opts.payload ?? Buffer.from('0123456789abcdef');
  const b = Buffer.alloc(ihl * 4 + payload.length);
  b[0] = 0x40 | ihl;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(0x1234, 4);
  b.writeUInt16BE(opts.frag ?? 0x4000, 6);
  b[8] = opts.ttl ?? 64;
  b[9] = opts.proto ?? 17;
  b.writeUInt32BE(ipToU32(src), 12);
  b.writeUInt32BE(ipToU32(dst), 16);
  b.writeUInt16BE(internetChecksum(b, 0, ihl * 4), 10);
  payload.copy(b, ihl * 4);
  return b;
}

describe('udp packet functions', () => {
  it('decrements the TTL and keeps the header checksum valid (incremental update = full recompute)', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let i = 0; i < 2000; i++) {
      const p = packet(u32ToIp((rnd() * 2 ** 32) >>> 0), u32ToIp((rnd() * 2 ** 32) >>> 0), {
        ttl: 2 + Math.floor(rnd() * 254),
        proto: Math.floor(rnd() * 256),
        ihl: 5 + Math.floor(rnd() * 3),
      });
      p.writeUInt16BE((rnd() * 65536) & 0xffff, 4);
      p.writeUInt16BE(0, 10);
      p.writeUInt16BE(internetChecksum(p, 0, (p[0]! & 15) * 4), 10);
      const ttl = p[8]!;
      assert.ok(decrementTtl(p));
      assert.equal(p[8], ttl - 1);
      assert.equal(internetChecksum(p, 0, (p[0]! & 15) * 4), 0, `header sums to zero after the update (case ${i})`);
    }
  });

  it('refuses to forward TTL 1 and 0, leaving the packet as it was', () => {
    for (const ttl of [0, 1]) {
      const p = packet('10.244.1.2', '10.244.2.3', { ttl });
      const copy = Buffer.from(p);
      assert.equal(decrementTtl(p), false);
      assert.deepEqual(p, copy);
    }
  });

  it('validates IPv4 framing', () => {
    const p = packet('10.244.1.2', '10.244.2.3');
    assert.equal(ipv4Length(p, p.length), p.length);
    assert.equal(ipv4Length(Buffer.concat([p, Buffer.alloc(10)]), p.length + 10), p.length, 'trailing bytes are trimmed');
    assert.equal(ipv4Length(p, 19), 0, 'short');
    assert.equal(ipv4Length(p, p.length - 1), 0, 'total length beyond the datagram');
    const v6 = Buffer.from(p);
    v6[0] = 0x60;
    assert.equal(ipv4Length(v6, v6.length), 0);
    const badIhl = Buffer.from(p);
    badIhl[0] = 0x44;
    assert.equal(ipv4Length(badIhl, badIhl.length), 0);
    assert.equal(ipv4Length(Buffer.from('garbage garbage garbage!'), 24), 0);
  });

  it('builds an ICMP net unreachable from the flannel0 address, quoting the header + 8 bytes', () => {
    const p = packet('10.244.1.2', '10.99.0.1', { payload: Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZ') });
    const out = Buffer.alloc(256);
    const n = icmpNetUnreachable(out, p, p.length, ipToU32('10.244.1.0'));
    const r = out.subarray(0, n);
    assert.equal(n, 20 + 8 + 20 + 8);
    assert.equal(ipv4Length(r, n), n);
    assert.equal(internetChecksum(r, 0, 20), 0, 'IP header checksum');
    assert.equal(r[9], 1, 'protocol ICMP');
    assert.equal(u32ToIp(srcOf(r)), '10.244.1.0');
    assert.equal(u32ToIp(dstOf(r)), '10.244.1.2');
    assert.equal(r[20], 3);
    assert.equal(r[21], 0);
    assert.equal(internetChecksum(r, 20, n), 0, 'ICMP checksum');
    assert.deepEqual(r.subarray(28), p.subarray(0, 28));
    // A short packet is quoted whole.
    const tiny = packet('10.244.1.2', '10.99.0.1', { payload: Buffer.from('xy') });
    assert.equal(icmpNetUnreachable(out, tiny, tiny.length, 1), 28 + tiny.length);
  });

  it('sends no ICMP error about ICMP errors, fragments, multicast or broadcast', () => {
    const err = packet('10.244.1.2', '10.99.0.1', { proto: 1, payload: Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]) });
    const echo = packet('10.244.1.2', '10.99.0.1', { proto: 1, payload: Buffer.from([8, 0, 0, 0, 0, 0, 0, 0]) });
    assert.equal(mayAnswerWithIcmpError(err, err.length), false);
    assert.equal(mayAnswerWithIcmpError(echo, echo.length), true);
    const frag = packet('10.244.1.2', '10.99.0.1', { frag: 0x0010 });
    assert.equal(mayAnswerWithIcmpError(frag, frag.length), false);
    const mc = packet('10.244.1.2', '239.1.1.1');
    assert.equal(mayAnswerWithIcmpError(mc, mc.length), false);
    const bc = packet('10.244.1.2', '255.255.255.255');
    assert.equal(mayAnswerWithIcmpError(bc, bc.length), false);
  });

  it('finds the lease for a destination by longest prefix', () => {
    const t = new PeerTable([
      { base: ipToU32('10.244.2.0'), prefix: 24, publicIP: ipToU32('198.18.0.12') },
      { base: ipToU32('10.244.3.0'), prefix: 24, publicIP: ipToU32('198.18.0.13') },
      { base: ipToU32('10.244.3.128'), prefix: 25, publicIP: ipToU32('198.18.0.99') },
      { base: ipToU32('10.245.0.0'), prefix: 16, publicIP: ipToU32('198.18.0.14') },
    ]);
    const at = (ip: string) => {
      const v = t.lookup(ipToU32(ip));
      return v === undefined ? undefined : u32ToIp(v);
    };
    assert.equal(at('10.244.2.7'), '198.18.0.12');
    assert.equal(at('10.244.3.7'), '198.18.0.13');
    assert.equal(at('10.244.3.200'), '198.18.0.99', 'the longer prefix wins');
    assert.equal(at('10.245.200.1'), '198.18.0.14');
    assert.equal(at('10.244.4.1'), undefined);
    assert.ok(t.sources.has(ipToU32('198.18.0.13')));
    assert.ok(!t.sources.has(ipToU32('198.18.0.2')));
  });

  it('shares the peer table and settings with the workers through shared memory', () => {
    const ctl = new Int32Array(new SharedArrayBuffer(controlBytes));
    const settings = { ownBase: ipToU32('10.244.1.0'), ownPrefix: 24, tunAddr: ipToU32('10.244.1.0'), port: 8285 };
    writePeers(ctl, settings, [{ base: ipToU32('250.244.2.0'), prefix: 24, publicIP: ipToU32('198.18.0.12') }]);
    const r = readPeers(ctl);
    assert.equal(r.version % 2, 0);
    assert.deepEqual(r.settings, settings);
    assert.equal(u32ToIp(r.table.lookup(ipToU32('250.244.2.9'))!), '198.18.0.12');
  });

  /** A TCP super-packet as a TSO-capable TUN hands it over: valid IP header, pseudo-header seed in the TCP checksum. */
  function superPacket(payload: Buffer, flags: number): Buffer {
    const b = Buffer.alloc(20 + 32 + payload.length);
    b[0] = 0x45;
    b.writeUInt16BE(Math.min(b.length, 0xffff), 2);
    b.writeUInt16BE(0xfff0, 4);
    b.writeUInt16BE(0x4000, 6);
    b[8] = 64;
    b[9] = 6;
    b.writeUInt32BE(ipToU32('10.244.1.2'), 12);
    b.writeUInt32BE(ipToU32('10.244.2.3'), 16);
    b.writeUInt16BE(internetChecksum(b, 0, 20), 10);
    b.writeUInt16BE(40000, 20);
    b.writeUInt16BE(7000, 22);
    b.writeUInt32BE(0xfffffff0, 24); // wraps within the packet
    b.writeUInt32BE(99, 28);
    b[32] = 8 << 4;
    b[33] = flags;
    b.writeUInt16BE(500, 34);
    b.fill(1, 40, 52); // options (NOPs)
    payload.copy(b, 52);
    return b;
  }

  const tcpValid = (p: Buffer): boolean => {
    const ihl = (p[0]! & 15) * 4;
    const tcpLen = p.readUInt16BE(2) - ihl;
    const pseudo = Buffer.concat([p.subarray(12, 20), Buffer.from([0, 6, tcpLen >> 8, tcpLen & 255]), p.subarray(ihl)]);
    return internetChecksum(pseudo) === 0;
  };

  it('sums in WebAssembly what internetChecksum sums, at any alignment and length', () => {
    const m = csum.mem;
    for (let i = 0; i < m.length; i++) m[i] = (i * 131 + 7 + (i >> 8)) & 255;
    const ranges = [
      [0, 0],
      [0, 1],
      [5, 6],
      [62, 1482],
      [3, 999],
      [17, 17 + 33],
      [1, 65536 + 31],
      [0, CSUM_MEMORY_BYTES],
      [CSUM_MEMORY_BYTES - 1, CSUM_MEMORY_BYTES],
    ];
    for (let i = 0; i < 200; i++) {
      const s = (i * 7919) % 70000;
      ranges.push([s, s + ((i * 104729) % 60000)]);
    }
    for (const [s, e] of ranges) assert.equal(~csum.sum(s!, e!) & 0xffff, internetChecksum(m, s, e), `${s}..${e}`);
    m.fill(0xff);
    assert.equal(~csum.sum(0, CSUM_MEMORY_BYTES) & 0xffff, internetChecksum(m, 0, CSUM_MEMORY_BYTES), 'every lane near its top');
  });

  it('segments a TSO super-packet into valid MSS-sized TCP/IPv4 packets, as a NIC would', () => {
    const payload = Buffer.alloc(10_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 255;
    const b = superPacket(payload, 0x18 | 0x80 | 0x01); // PSH ACK CWR FIN
    const segs = segment(b, 1420);
    assert.equal(segs.length, 8);
    assert.ok(segs.slice(0, 7).every((p) => p.length === 52 + 1420));
    const got: Buffer[] = [];
    for (const [i, p] of segs.entries()) {
      assert.equal(ipv4Length(p, p.length), p.length);
      assert.equal(internetChecksum(p, 0, 20), 0, 'IP checksum');
      assert.ok(tcpValid(p), `TCP checksum of segment ${i}`);
      assert.equal(p.readUInt16BE(4), (0xfff0 + i) & 0xffff, 'IP ID increments');
      assert.equal(p.readUInt32BE(24), (0xfffffff0 + i * 1420) >>> 0, 'sequence number');
      const f = p[33]!;
      assert.equal((f & 0x09) !== 0, i === 7, 'PSH/FIN only on the last');
      assert.equal((f & 0x80) !== 0, i === 0, 'CWR only on the first');
      assert.equal(f & 0x10, 0x10, 'ACK on every one');
      got.push(p.subarray(52));
    }
    assert.deepEqual(Buffer.concat(got), payload);
    // Not TCP: not segmented.
    const u = Buffer.from(b);
    u[9] = 17;
    assert.deepEqual(segment(u, 1420), []);
  });

  it('completes a partial checksum (virtio NEEDS_CSUM)', () => {
    const b = superPacket(Buffer.from('hello, partial checksum'), 0x18);
    const len = b.length;
    const tcpLen = len - 20;
    const pseudo = ~internetChecksum(Buffer.concat([b.subarray(12, 20), Buffer.from([0, 6, tcpLen >> 8, tcpLen & 255])])) & 0xffff;
    b.writeUInt16BE(pseudo, 36);
    b.copy(csum.mem, 11);
    const pkt = csum.mem.subarray(11);
    assert.ok(completeChecksum(pkt, csum.sum, len, 20, 16));
    assert.ok(tcpValid(pkt.subarray(0, len)));
  });

  describe('receive-side coalescing (TcpCoalescer)', () => {
    /** The wire segments of one TSO super-packet: what a peer's tx loop sends, MSS 1400 here. */
    function flow(bytes: number, flags: number, opts: { seq?: number; sport?: number } = {}): Buffer[] {
      const payload = Buffer.alloc(bytes);
      for (let i = 0; i < bytes; i++) payload[i] = (i * 13 + (opts.seq ?? 0)) & 255;
      const sp = superPacket(payload, flags);
      // An options-free IP header (superPacket's is), the given sequence number and port.
      if (opts.seq !== undefined) sp.writeUInt32BE(opts.seq >>> 0, 24);
      if (opts.sport !== undefined) sp.writeUInt16BE(opts.sport, 20);
      return segment(sp, 1400);
    }
    interface Emitted {
      hdr: Buffer;
      pkt: Buffer;
      packets: number;
      bytes: number;
    }
    function run(packets: Buffer[]): Emitted[] {
      const got: Emitted[] = [];
      // Back to back in one buffer, as one UDP GRO read holds them.
      const all = Buffer.concat(packets);
      const c: TcpCoalescer = new TcpCoalescer((headLen, packets, bytes) => {
        const slices = Array.from({ length: c.slices }, (_, i) => all.subarray(c.sliceAt[i], c.sliceAt[i]! + c.sliceLen[i]!));
        got.push({ hdr: Buffer.from(c.head.subarray(0, 10)), pkt: Buffer.concat([c.head.subarray(10, headLen), ...slices]), packets, bytes });
      });
      let o = 0;
      for (const p of packets) {
        c.add(all, o, p.length);
        o += p.length;
      }
      c.flush();
      return got;
    }
    /** What the kernel does with a GSO packet: complete the checksum, cut at gso_size. */
    function resegment(e: Emitted): Buffer[] {
      assert.equal(e.hdr[0], 1, 'NEEDS_CSUM');
      assert.equal(e.hdr[1], 1, 'GSO TCPV4');
      const p = Buffer.from(e.pkt);
      assert.equal(p.readUInt16BE(2), p.length, 'IP total length');
      assert.equal(internetChecksum(p, 0, 20), 0, 'IP header checksum');
      assert.equal(e.hdr.readUInt16LE(2), 52, 'hdr_len');
      assert.equal(e.hdr.readUInt16LE(6), 20, 'csum_start');
      assert.equal(e.hdr.readUInt16LE(8), 16, 'csum_offset');
      p.copy(csum.mem);
      assert.ok(completeChecksum(csum.mem, csum.sum, p.length, 20, 16));
      assert.ok(tcpValid(csum.mem.subarray(0, p.length)), 'pseudo-header sum + payload = a valid TCP checksum');
      return segment(p, e.hdr.readUInt16LE(4));
    }

    it("merges one flow's in-order segments into one GSO packet that re-segments to the same bytes", () => {
      const segs = flow(30_000, 0x18); // ACK PSH: PSH only on the last segment
      assert.equal(segs.length, 22);
      const got = run(segs);
      assert.equal(got.length, 1);
      assert.equal(got[0]!.packets, 22);
      assert.equal(
        got[0]!.bytes,
        segs.reduce((a, s) => a + s.length, 0),
      );
      assert.equal(got[0]!.hdr.readUInt16LE(4), 1400, 'gso_size = the MSS');
      assert.equal(got[0]!.pkt[33], 0x18, 'PSH of the last segment carried');
      assert.deepEqual(resegment(got[0]!), segs);
    });

    it('stops at 64 KiB and starts a new run', () => {
      const segs = flow(100_000, 0x10);
      const got = run(segs);
      assert.ok(got.length >= 2);
      assert.ok(got.every((e) => e.pkt.length <= 65535));
      assert.equal(
        got.reduce((a, e) => a + e.packets, 0),
        segs.length,
      );
      assert.deepEqual(
        got.flatMap((e) => (e.packets > 1 ? resegment(e) : [e.pkt])),
        segs,
      );
    });

    it('writes everything else one by one behind a zero header, in order', () => {
      const a = flow(4200, 0x10, { seq: 1000 });
      const gap = flow(2800, 0x10, { seq: 1000 + 4200 + 1 }); // a sequence gap
      const other = flow(2800, 0x10, { seq: 1000 + 4200 + 1 + 2800, sport: 41000 }); // another flow
      const syn = flow(100, 0x02);
      const fin = flow(100, 0x11);
      const udp = packet('10.244.1.2', '10.244.2.3');
      const opts = packet('10.244.1.2', '10.244.2.3', { proto: 6, ihl: 6, payload: Buffer.alloc(40) });
      const got = run([...a, udp, ...gap, ...other, syn[0]!, fin[0]!, opts]);
      assert.deepEqual(
        got.map((e) => e.packets),
        [3, 1, 2, 2, 1, 1, 1],
      );
      for (const e of got.filter((e) => e.packets === 1)) assert.deepEqual(e.hdr, Buffer.alloc(10), 'zero header');
      assert.deepEqual(got[1]!.pkt, udp);
      assert.deepEqual(resegment(got[2]!), gap);
      assert.deepEqual(resegment(got[3]!), other);
      assert.deepEqual(got[4]!.pkt, syn[0]);
      assert.deepEqual(got[5]!.pkt, fin[0]);
      assert.deepEqual(got[6]!.pkt, opts);
    });

    it('ends a run after a short or PSH segment, and after a changed ACK, TTL or option', () => {
      const segs = flow(7000, 0x10); // 5 x 1400
      const short = flow(7000, 0x10);
      short[1] = Buffer.concat([short[1]!.subarray(0, short[1]!.length - 100)]);
      short[1].writeUInt16BE(short[1].length, 2);
      short[1].writeUInt16BE(0, 10);
      short[1].writeUInt16BE(internetChecksum(short[1], 0, 20), 10);
      // Segment 1 is 100 bytes short: it closes the run (2, 3 and 4 make the next one).
      assert.deepEqual(
        run(short).map((e) => e.packets),
        [2, 3],
      );
      const psh = flow(7000, 0x10);
      psh[2]![33] = 0x18;
      assert.deepEqual(
        run(psh).map((e) => e.packets),
        [3, 2],
      );
      for (const [at, what] of [
        [28, 'ACK number'],
        [8, 'TTL'],
        [44, 'option'],
      ] as const) {
        const x = flow(7000, 0x10);
        for (const seg of x.slice(3)) {
          seg[at]! ^= 1;
          if (at === 8) {
            seg.writeUInt16BE(0, 10);
            seg.writeUInt16BE(internetChecksum(seg, 0, 20), 10);
          }
        }
        assert.deepEqual(
          run(x).map((e) => e.packets),
          [3, 2],
          what,
        );
      }
      assert.equal(run(segs).length, 1);
    });

    it('starts a new run for a packet from another buffer (the slices point into the buffer)', () => {
      const segs = flow(4200, 0x10);
      const [x, y] = [Buffer.concat(segs.slice(0, 2)), Buffer.from(segs[2]!)];
      const got: number[] = [];
      const c = new TcpCoalescer((_, packets) => got.push(packets));
      c.add(x, 0, segs[0]!.length);
      c.add(x, segs[0]!.length, segs[1]!.length);
      c.add(y, 0, y.length);
      c.flush();
      assert.deepEqual(got, [2, 1]);
    });

    it('does not merge a segment whose IP header checksum is wrong', () => {
      const segs = flow(4200, 0x10);
      segs[1]![10]! ^= 0xff;
      assert.equal(coalescibleTcp(segs[1]!, 0, segs[1]!.length), 0);
      assert.deepEqual(
        run(segs).map((e) => e.packets),
        [1, 1, 1],
      );
    });
  });
});
