/**
 * Small network tools the agent tests run inside namespaces (the machines have no ping, nc or
 * socat). `node dist/test/agent-tool.js COMMAND ...`:
 *   serve PORT                 TCP + UDP server: says "from <peer address>" to every client, then echoes
 *                              (UDP "seq N" datagrams from probe come back unchanged)
 *   tcp HOST PORT              connects, prints the server's first line ("from ...")
 *   udp HOST PORT              sends a datagram, prints the reply
 *   stream HOST PORT           a long-lived TCP flow: a line every 100 ms, prints "ok N" as echoes return
 *   forge DST VNI MAC SRC_IP DST_IP PORT   sends one hand-made VXLAN packet carrying UDP SRC_IP → DST_IP:PORT
 *   forge-udp DST UPORT SRC_IP DST_IP PORT sends one flannel-udp datagram (a raw IPv4 packet) carrying UDP SRC_IP → DST_IP:PORT to DST:UPORT
 *   garbage DST UPORT N                    sends N datagrams of random bytes to DST:UPORT
 *   probe HOST PORT COUNT MS   sends COUNT numbered UDP datagrams, one every MS ms, to the serve
 *                              echo; prints "sent N" as it goes and finally "lost L of COUNT: seq,..."
 *   etcd ENDPOINT PREFIX get|del|put KEY [VALUE]
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createConnection, createServer } from 'node:net';

const [cmd, ...args] = process.argv.slice(2);
const die = (msg: string): never => {
  process.stderr.write(`${msg}\n`);
  process.exit(1);
};
const peer = (a: string | undefined) => (a ?? '?').replace(/^::ffff:/, '');

function serve(port: number): void {
  const tcp = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.write(`from ${peer(sock.remoteAddress)}\n`);
    sock.pipe(sock);
  });
  const udp = createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    const text = msg.toString().trim();
    // A probe's datagrams are echoed as they are (and not logged: there are thousands).
    if (text.startsWith('seq ')) return void udp.send(text, rinfo.port, rinfo.address);
    process.stdout.write(`got ${rinfo.address} ${text}\n`);
    udp.send(`from ${rinfo.address}`, rinfo.port, rinfo.address);
  });
  let ready = 0;
  const up = () => ++ready === 2 && process.stdout.write('ready\n');
  tcp.listen(port, '0.0.0.0', up);
  udp.bind(port, '0.0.0.0', up);
}

function tcp(host: string, port: number): void {
  const timer = setTimeout(() => die(`tcp ${host}:${port}: timed out`), 3000);
  const sock = createConnection({ host, port });
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString();
    if (buf.includes('\n')) {
      clearTimeout(timer);
      process.stdout.write(buf.split('\n')[0] + '\n');
      sock.destroy();
    }
  });
  sock.on('error', (e) => die(`tcp ${host}:${port}: ${e.message}`));
}

function udp(host: string, port: number): void {
  const sock = createSocket('udp4');
  let tries = 0;
  const send = () => {
    if (++tries > 5) die(`udp ${host}:${port}: no reply`);
    sock.send('hello', port, host);
  };
  const timer = setInterval(send, 500);
  sock.on('message', (msg) => {
    clearInterval(timer);
    process.stdout.write(`${msg.toString()}\n`);
    sock.close();
  });
  sock.on('error', (e) => die(`udp ${host}:${port}: ${e.message}`));
  send();
}

function stream(host: string, port: number): void {
  const sock = createConnection({ host, port });
  let sent = 0;
  let echoed = 0;
  let last = Date.now();
  let buf = '';
  let greeted = false;
  sock.on('data', (d) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) {
      if (!greeted) {
        greeted = true;
        process.stdout.write(`${l}\n`);
        continue;
      }
      echoed++;
      last = Date.now();
    }
  });
  const tick = setInterval(() => {
    if (Date.now() - last > 5000) {
      process.stdout.write(`stalled after ${echoed}\n`);
      process.exit(2);
    }
    sock.write(`${++sent}\n`);
    if (sent % 5 === 0) process.stdout.write(`ok ${echoed}\n`);
  }, 100);
  sock.on('error', (e) => {
    clearInterval(tick);
    process.stdout.write(`broken ${e.message}\n`);
    process.exit(3);
  });
  sock.on('close', () => {
    process.stdout.write('closed\n');
    process.exit(4);
  });
}

/** Bounded: COUNT datagrams, then 2 s for the last replies; the server answers each one. */
function probe(host: string, port: number, count: number, everyMs: number): void {
  const sock = createSocket('udp4');
  const answered = new Set<number>();
  let sent = 0;
  sock.on('message', (msg) => {
    const m = /seq (\d+)/.exec(msg.toString());
    if (m) answered.add(Number(m[1]));
  });
  sock.on('error', (e) => die(`probe ${host}:${port}: ${e.message}`));
  const tick = setInterval(() => {
    if (sent === count) {
      clearInterval(tick);
      setTimeout(() => {
        const lost = Array.from({ length: count }, (_, i) => i).filter((i) => !answered.has(i));
        process.stdout.write(`lost ${lost.length} of ${count}: ${lost.join(',')}\n`);
        process.exit(0);
      }, 2000);
      return;
    }
    sock.send(`seq ${sent++}`, port, host);
    if (sent % 100 === 0) process.stdout.write(`sent ${sent}\n`);
  }, everyMs);
}

const ipBytes = (ip: string) => Buffer.from(ip.split('.').map(Number));

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) + (b[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/** IPv4 + UDP carrying "forged", checksums right. */
function innerPacket(src: string, inner: string, port: number): Buffer {
  const payload = Buffer.from('forged\n');
  const udpHdr = Buffer.alloc(8);
  udpHdr.writeUInt16BE(40000, 0);
  udpHdr.writeUInt16BE(port, 2);
  udpHdr.writeUInt16BE(8 + payload.length, 4);
  const pseudo = Buffer.concat([ipBytes(src), ipBytes(inner), Buffer.from([0, 17]), Buffer.from([0, 8 + payload.length]), udpHdr, payload]);
  udpHdr.writeUInt16BE(checksum(pseudo) || 0xffff, 6);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + payload.length, 2);
  ip.writeUInt16BE(0x4000, 6);
  ip[8] = 64;
  ip[9] = 17;
  ipBytes(src).copy(ip, 12);
  ipBytes(inner).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([ip, udpHdr, payload]);
}

/** VXLAN header + Ethernet + IPv4 + UDP, every field as a real VTEP would write it. */
function forge(dst: string, vni: number, mac: string, src: string, inner: string, port: number): void {
  const eth = Buffer.concat([Buffer.from(mac.split(':').map((h) => parseInt(h, 16))), Buffer.from([0x02, 0, 0, 0, 0xbe, 0xef]), Buffer.from([0x08, 0x00])]);
  const vx = Buffer.alloc(8);
  vx[0] = 0x08;
  vx.writeUIntBE(vni, 4, 3);
  const packet = Buffer.concat([vx, eth, innerPacket(src, inner, port)]);
  const sock = createSocket('udp4');
  sock.send(packet, 8472, dst, (err) => {
    if (err) die(err.message);
    sock.close();
    process.stdout.write('sent\n');
  });
}

/** flannel's udp wire format: the inner packet is the whole datagram. */
function forgeUdp(dst: string, uport: number, src: string, inner: string, port: number): void {
  const sock = createSocket('udp4');
  sock.send(innerPacket(src, inner, port), uport, dst, (err) => {
    if (err) die(err.message);
    sock.close();
    process.stdout.write('sent\n');
  });
}

async function garbage(dst: string, uport: number, n: number): Promise<void> {
  const sock = createSocket('udp4');
  for (let i = 0; i < n; i++) {
    const b = randomBytes(1 + ((i * 97) % 1400));
    if (i === 0) b[0] = 0x45; // looks like IPv4 at first glance
    await new Promise<void>((resolve, reject) => sock.send(b, uport, dst, (err) => (err ? reject(err) : resolve())));
  }
  sock.close();
  process.stdout.write('sent\n');
}

async function etcd(endpoint: string, prefix: string, op: string, key: string, value?: string): Promise<void> {
  // Loaded only here: the etcd client takes a while to load, and the other commands are timed.
  const { EtcdStore } = await import('../src/store/etcd.js');
  const store = new EtcdStore({ endpoints: [endpoint], prefix, timeoutMs: 3000 });
  try {
    if (op === 'get') process.stdout.write(`${(await store.get(key))?.value ?? ''}\n`);
    else if (op === 'list') process.stdout.write(`${JSON.stringify((await store.list(key)).items)}\n`);
    else if (op === 'del') process.stdout.write(`${await store.delete(key)}\n`);
    else if (op === 'put') process.stdout.write(`${await store.put(key, value ?? '')}\n`);
    else die(`unknown etcd op ${op}`);
  } finally {
    await store.close();
  }
}

switch (cmd) {
  case 'serve':
    serve(Number(args[0]));
    break;
  case 'tcp':
    tcp(args[0]!, Number(args[1]));
    break;
  case 'udp':
    udp(args[0]!, Number(args[1]));
    break;
  case 'stream':
    stream(args[0]!, Number(args[1]));
    break;
  case 'forge':
    forge(args[0]!, Number(args[1]), args[2]!, args[3]!, args[4]!, Number(args[5]));
    break;
  case 'forge-udp':
    forgeUdp(args[0]!, Number(args[1]), args[2]!, args[3]!, Number(args[4]));
    break;
  case 'garbage':
    garbage(args[0]!, Number(args[1]), Number(args[2])).catch((e: Error) => die(e.message));
    break;
  case 'probe':
    probe(args[0]!, Number(args[1]), Number(args[2]), Number(args[3]));
    break;
  case 'etcd':
    etcd(args[0]!, args[1]!, args[2]!, args[3]!, args[4]).catch((e: Error) => die(e.message));
    break;
  default:
    die(`unknown command ${cmd}`);
}
