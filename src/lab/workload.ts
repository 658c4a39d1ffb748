import { createSocket } from 'node:dgram';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request } from 'node:http';
import { createConnection, createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { dirname } from 'node:path';

/**
 * A lab pod's containers. The app answers HTTP (TCP) and UDP on APP_PORT, and on its pod's
 * containerPorts, with who it is, the port asked and the client address it sees; the sidecar answers HTTP on localhost only. Both take probe requests from `weft verify`
 * on a unix socket (the filesystem is shared across namespaces), so checks originate inside the pod.
 */
export const APP_PORT = 80;
export const SIDECAR_PORT = 9000;

export interface Identity {
  pod: string;
  node: string;
  container: string;
}

export interface Seen {
  pod: string;
  node: string;
  container: string;
  proto: 'tcp' | 'udp';
  /** The port the request arrived on (a Service's targetPort after DNAT). */
  port: number;
  client: string;
}

/** A port the app listens on besides APP_PORT (a containerPort of the pod's manifest). */
export interface AppPort {
  port: number;
  protocol: 'TCP' | 'UDP';
}

export type Probe = { proto: 'tcp' | 'udp'; host: string; port: number; timeoutMs?: number };

export type ProbeResult = { ok: true; seen: Seen; ms: number } | { ok: false; error: string; ms: number };

const seenBy = (id: Identity, proto: Seen['proto'], port: number, client: string | undefined): Seen => ({
  ...id,
  proto,
  port,
  client: (client ?? '?').replace(/^::ffff:/, ''),
});

/** One exchange from this namespace: an HTTP GET over TCP, or a UDP datagram; the peer says what it saw. */
export function probe(p: Probe): Promise<ProbeResult> {
  const started = performance.now();
  const timeoutMs = p.timeoutMs ?? 2000;
  return new Promise((resolve) => {
    let release = () => undefined as void;
    let done = false;
    const finish = (r: { ok: true; seen: Seen } | { ok: false; error: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      release();
      resolve({ ...r, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    const parse = (text: string) => {
      try {
        finish({ ok: true, seen: JSON.parse(text) as Seen });
      } catch {
        finish({ ok: false, error: `unexpected answer: ${text.slice(0, 80)}` });
      }
    };
    if (p.proto === 'udp') {
      const sock = createSocket('udp4');
      release = () => sock.close();
      sock.on('message', (m) => parse(m.toString()));
      sock.on('error', (e) => finish({ ok: false, error: e.message }));
      // Connected, so that an ICMP port unreachable comes back as ECONNREFUSED instead of silence.
      sock.connect(p.port, p.host, () => sock.send('who'));
    } else {
      // A new connection each time (no keep-alive agent): each probe is one connection through a Service.
      const req = request({ host: p.host, port: p.port, path: '/', agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => parse(body));
      });
      release = () => req.destroy();
      req.on('error', (e) => finish({ ok: false, error: e.message }));
      req.end();
    }
  });
}

function controlServer(path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true });
  createServer({ allowHalfOpen: true }, (sock) => {
    let body = '';
    sock.on('data', (d: Buffer) => (body += d.toString()));
    sock.on('error', () => undefined);
    sock.on('end', () => {
      let p: Probe;
      try {
        p = JSON.parse(body) as Probe;
      } catch {
        // A liveness check (connect, then close) or garbage: nothing to run.
        sock.end();
        return;
      }
      void probe(p).then((r) => sock.end(JSON.stringify(r)));
    });
  }).listen(path);
}

const http = (id: Identity) =>
  createHttpServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(`${JSON.stringify(seenBy(id, 'tcp', req.socket.localPort ?? 0, req.socket.remoteAddress))}\n`);
  });

/**
 * One socket per local address: a socket on 0.0.0.0 answers from whatever address the route back
 * picks, and where that is not the address the datagram came to (the outside world has two), the
 * client's conntrack cannot undo its NAT and the answer is lost.
 */
function udpServer(id: Identity, port: number): void {
  const local = Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => a.family === 'IPv4')
    .map((a) => a.address);
  for (const address of local) {
    const udp = createSocket('udp4');
    udp.on('message', (_m, rinfo) => udp.send(JSON.stringify(seenBy(id, 'udp', port, rinfo.address)), rinfo.port, rinfo.address));
    udp.bind(port, address);
  }
}

export function runContainer(id: Identity, control: string, ports: AppPort[] = []): void {
  if (id.container === 'sidecar') {
    http(id).listen(SIDECAR_PORT, '127.0.0.1');
  } else {
    const all = [{ port: APP_PORT, protocol: 'TCP' }, { port: APP_PORT, protocol: 'UDP' }, ...ports];
    const unique = new Map(all.map((p) => [`${p.port}/${p.protocol}`, p]));
    for (const p of unique.values()) {
      if (p.protocol === 'TCP') http(id).listen(p.port, '0.0.0.0');
      else udpServer(id, p.port);
    }
  }
  controlServer(control);
}

/** `--ports` of workload-main: `8080/TCP,53/UDP`. */
export const portsArg = (ports: AppPort[]) => ports.map((p) => `${p.port}/${p.protocol}`).join(',');

export function parsePorts(text: string): AppPort[] {
  return text
    .split(',')
    .filter(Boolean)
    .map((item) => {
      const m = /^(\d+)\/(TCP|UDP)$/.exec(item);
      const port = Number(m?.[1]);
      if (!m || port < 1 || port > 65535) throw new Error(`--ports takes PORT/TCP or PORT/UDP items separated by commas, not "${item}"`);
      return { port, protocol: m[2] as AppPort['protocol'] };
    });
}

/** Asks the container behind `control` to run a probe from inside its pod. */
export function probeFrom(control: string, p: Probe): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = createConnection(control);
    let body = '';
    sock.on('connect', () => sock.end(JSON.stringify(p)));
    sock.on('data', (d: Buffer) => (body += d.toString()));
    sock.on('end', () => {
      try {
        resolve(JSON.parse(body) as ProbeResult);
      } catch {
        resolve({ ok: false, error: `probe agent at ${control} gave no answer`, ms: 0 });
      }
    });
    sock.on('error', (e) => resolve({ ok: false, error: `probe agent at ${control}: ${e.message}`, ms: 0 }));
  });
}
