import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ipToU32 } from './udp-packet.js';
import { addressOf, closeFd, errno, GroReceiver, openUdp, pollFn, sendtoFn, sockaddr, UdpSender } from './udp-sys.js';

/** Two UDP sockets on 127.0.0.1 (no root, no namespace change): the receive side's recvmsg + UDP_GRO. */
describe('GroReceiver', () => {
  const lo = ipToU32('127.0.0.1');
  function pair(): { a: number; b: number; portA: number; portB: number } | undefined {
    for (let attempt = 0; attempt < 20; attempt++) {
      const portA = 40000 + Math.floor(Math.random() * 20000);
      try {
        const a = openUdp(lo, portA, 1 << 20);
        try {
          return { a, b: openUdp(lo, portA + 1, 1 << 20), portA, portB: portA + 1 };
        } catch {
          closeFd(a);
        }
      } catch {
        // port taken: another one
      }
    }
    return undefined;
  }
  const wait = (fd: number) => {
    const p = Buffer.alloc(8);
    p.writeInt32LE(fd, 0);
    p.writeInt16LE(1, 4);
    pollFn(p, 1, 1000);
  };

  // Over loopback the kernel hands a UDP GSO send to a socket with UDP_GRO as it was sent, one
  // buffer with its segment size (udp_unexpected_gso() is false for such a socket): no NIC and no
  // timing decide whether the datagrams coalesce, so the read is always the whole train.
  it('returns a UDP GSO send as one read with its segment size, and a lone datagram with its own', () => {
    const s = pair();
    assert.ok(s, 'two UDP sockets on 127.0.0.1');
    try {
      const rcv = new GroReceiver();
      const to = sockaddr(lo, s.portB);
      const data = Buffer.alloc(5 * 1000 - 300);
      for (let i = 0; i < data.length; i++) data[i] = i & 255;
      // Gathered from three iovecs that do not line up with the datagrams.
      const out = new UdpSender(8);
      const at = addressOf(data);
      out.iov.push(at, 1500);
      out.iov.push(at + 1500, 10);
      out.iov.push(at + 1510, data.length - 1510);
      out.destination(lo, s.portB);
      assert.equal(out.send(s.a, 0, 3, 1000), data.length, `sendmsg with UDP_SEGMENT errno ${errno()}`);
      wait(s.b);
      const n = rcv.recv(s.b);
      assert.equal(n, data.length, `one read carries the whole train of five datagrams (recvmsg errno ${errno()})`);
      assert.equal(rcv.gsoSize, 1000, 'the read says its segment size: four of 1000 bytes, then 700');
      assert.equal(rcv.from.readUInt16BE(2), s.portA, 'source port');
      assert.equal(rcv.from.readUInt32BE(4), lo, 'source address');
      assert.equal(rcv.at, 0);
      assert.deepEqual(rcv.data.subarray(0, n), data);
      assert.equal(sendtoFn(s.a, data, 700, 0, to, 16), 700);
      wait(s.b);
      assert.equal(rcv.recv(s.b), 700);
      assert.equal(rcv.gsoSize, 700, 'a lone datagram: its own length');
      assert.equal(rcv.at, rcv.size, 'the next read lands in the other half');
      assert.deepEqual(rcv.data.subarray(0, n), data, 'and leaves the last one in place');
      assert.equal(out.send(s.a, 1, 2, 0), 10, 'no segment size: one datagram');
      wait(s.b);
      assert.equal(rcv.recv(s.b), 10);
      assert.deepEqual(rcv.data.subarray(0, 10), data.subarray(1500, 1510), 'the third read lands in the first half again');
    } finally {
      if (s) {
        closeFd(s.a);
        closeFd(s.b);
      }
    }
  });
});
