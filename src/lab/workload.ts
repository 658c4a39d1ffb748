import { execFile } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { createConnection, createServer, isIPv4, Socket, type Server } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { boundSocket, inetSocket } from '../kernel/inet.js';
import { setSysctl } from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { addrs } from '../kernel/state.js';

/**
 * A lab node's pods' containers, all served by one process per node (a container runtime of sorts):
 * for each pod it opens the pod's sockets inside the pod's network namespace (kernel/inet.ts), so to
 * the network each pod is what it was as a process of its own. The app answers HTTP (TCP) and UDP on
 * APP_PORT, and on its pod's containerPorts, with who it is, the port asked and the client address it
 * sees; the sidecar is a second listener, on the pod's localhost only. Each container takes probe
 * requests from `weft verify` on a unix socket of its own (the filesystem is shared across
 * namespaces), and makes the probe's socket in its pod's namespace, so checks originate inside the pod.
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

/** An ICMP echo, as `ping -c 1 -W 2` sends it. */
export type Ping = { proto: 'icmp'; host: string; timeoutMs?: number };

export type PingResult = { ok: true; ms: number } | { ok: false; error: string; ms: number };

const seenBy = (id: Identity, proto: Seen['proto'], port: number, client: string | undefined): Seen => ({
  ...id,
  proto,
  port,
  client: (client ?? '?').replace(/^::ffff:/, ''),
});

/**
 * A name as an app in the pod resolves it: glibc's getaddrinfo with the pod's resolv.conf, which `ip
 * netns exec` mounts over /etc/resolv.conf (this process has neither the pod's network nor its file).
 */
function resolveInPod(ns: string, host: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', basename(ns), 'getent', 'ahostsv4', host], { timeout: timeoutMs }, (err, stdout) => {
      const ip = stdout.split(/\s+/)[0];
      if (ip) resolve(ip);
      else reject(new Error(`getaddrinfo ${err?.code === 2 ? 'ENOTFOUND' : 'EAI_AGAIN'} ${host}`));
    });
  });
}

/** One exchange from inside namespace `ns` (a path): an HTTP GET over TCP, or a UDP datagram; the peer says what it saw. */
export async function probe(ns: string, p: Probe): Promise<ProbeResult> {
  const started = performance.now();
  const timeoutMs = p.timeoutMs ?? 2000;
  if (!isIPv4(p.host)) {
    try {
      p = { ...p, host: await resolveInPod(ns, p.host, timeoutMs) };
    } catch (e) {
      return { ok: false, error: (e as Error).message, ms: performance.now() - started };
    }
  }
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
    // Where a TCP probe stopped tells a lost SYN from a slow server.
    let connectedAt: number | undefined;
    const stage = () =>
      p.proto === 'udp'
        ? ''
        : connectedAt === undefined
          ? ' (no connection: SYN unanswered)'
          : ` (connected after ${connectedAt.toFixed(0)} ms, no HTTP answer)`;
    const timer = setTimeout(() => {
      const late = performance.now() - started - timeoutMs;
      finish({ ok: false, error: `no answer within ${timeoutMs} ms${stage()}${late > 100 ? `; the prober's timer ran ${late.toFixed(0)} ms late` : ''}` });
    }, timeoutMs);
    const parse = (text: string) => {
      try {
        finish({ ok: true, seen: JSON.parse(text) as Seen });
      } catch {
        finish({ ok: false, error: `unexpected answer: ${text.slice(0, 80)}` });
      }
    };
    try {
      if (p.proto === 'udp') {
        const sock = createSocket('udp4');
        release = () => sock.close();
        sock.on('message', (m) => parse(m.toString()));
        sock.on('error', (e) => finish({ ok: false, error: e.message }));
        // Connected, so that an ICMP port unreachable comes back as ECONNREFUSED instead of silence.
        sock.bind({ fd: inetSocket(ns, 'udp') }, () => sock.connect(p.port, p.host, () => sock.send('who')));
      } else {
        const sock = new Socket({ fd: inetSocket(ns, 'tcp'), readable: true, writable: true });
        sock.once('connect', () => (connectedAt = performance.now() - started));
        // A new connection each time (no keep-alive agent): each probe is one connection through a Service.
        const req = request({ host: p.host, port: p.port, path: '/', createConnection: () => sock.connect(p.port, p.host) }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => parse(body));
        });
        release = () => {
          req.destroy();
          sock.destroy();
        };
        req.on('error', (e) => finish({ ok: false, error: e.message }));
        req.end();
      }
    } catch (e) {
      finish({ ok: false, error: (e as Error).message });
    }
  });
}

const ECHO_REPLY = 0;
/** Type 8 (echo request), code 0, checksum and id (the kernel fills both in), sequence 1, a payload. */
const ECHO_REQUEST = Buffer.from([8, 0, 0, 0, 0, 0, 0, 1, ...Buffer.from('weft')]);

/** One ICMP echo from inside namespace `ns` (a path), over a ping socket: `ping -c 1` without a process. */
export function ping(ns: string, p: Ping): Promise<PingResult> {
  const started = performance.now();
  const timeoutMs = p.timeoutMs ?? 2000;
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    let done = false;
    const finish = (r: { ok: true } | { ok: false; error: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve({ ...r, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no echo reply within ${timeoutMs} ms` }), timeoutMs);
    sock.on('message', (m) => m[0] === ECHO_REPLY && finish({ ok: true }));
    sock.on('error', (e) => finish({ ok: false, error: e.message }));
    try {
      // ICMP has no ports: the kernel ignores the one dgram insists on.
      sock.bind({ fd: inetSocket(ns, 'icmp') }, () => sock.send(ECHO_REQUEST, 1, p.host));
    } catch (e) {
      finish({ ok: false, error: (e as Error).message });
    }
  });
}

/** A probe that got no answer in time; the one failure a second try is given for (secondTry). */
export const timedOut = (r: ProbeResult | PingResult): boolean => !r.ok && /^no (answer|echo reply) within/.test(r.error);

/**
 * Sends the probes that timed out once more, in one request, and takes their second result, with the
 * first's error. Under load a SYN lost and sent again after 1 s, or a runtime starved of CPU, takes a
 * probe past its 2 s while the path is fine; a path that drops fails both tries, and a wrong answer,
 * a refusal or an unreachable is never tried again.
 */
export async function secondTry<P>(
  probes: P[],
  results: (ProbeResult | PingResult)[],
  again: (probes: P[]) => Promise<(ProbeResult | PingResult)[]>,
): Promise<{ result: ProbeResult | PingResult; retried?: string }[]> {
  const out: { result: ProbeResult | PingResult; retried?: string }[] = results.map((result) => ({ result }));
  const late = results.flatMap((r, i) => (timedOut(r) ? [i] : []));
  if (!late.length) return out;
  const second = await again(late.map((i) => probes[i]!));
  for (const [k, i] of late.entries()) out[i] = { result: second[k]!, retried: (results[i] as { error: string }).error };
  return out;
}

const run = (ns: string, p: Probe | Ping): Promise<ProbeResult | PingResult> => (p.proto === 'icmp' ? ping(ns, p) : probe(ns, p));

/**
 * A container's probe socket: each request (one JSON Probe or Ping, or a list of them run at once,
 * then end) runs from inside `ns`.
 */
function controlServer(path: string, ns: string): Server {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true });
  return createServer({ allowHalfOpen: true }, (sock) => {
    let body = '';
    sock.on('data', (d: Buffer) => (body += d.toString()));
    sock.on('error', () => undefined);
    sock.on('end', () => {
      let p: Probe | Ping | (Probe | Ping)[];
      try {
        p = JSON.parse(body) as typeof p;
      } catch {
        // A liveness check (connect, then close) or garbage: nothing to run.
        sock.end();
        return;
      }
      void (Array.isArray(p) ? Promise.all(p.map((x) => run(ns, x))) : run(ns, p)).then((r) => sock.end(JSON.stringify(r)));
    });
  }).listen(path);
}

const http = (id: Identity, fd: number): HttpServer =>
  createHttpServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(`${JSON.stringify(seenBy(id, 'tcp', req.socket.localPort ?? 0, req.socket.remoteAddress))}\n`);
  }).listen({ fd });

/**
 * One socket per local address: a socket on 0.0.0.0 answers from whatever address the route back
 * picks, and where that is not the address the datagram came to (the outside world has two), the
 * client's conntrack cannot undo its NAT and the answer is lost.
 */
async function udpServers(id: Identity, ns: string, port: number): Promise<UdpSocket[]> {
  const local = (await addrs(ns)).filter((a) => a.family === 4).map((a) => a.address);
  return local.map((address) => {
    const udp = createSocket('udp4');
    udp.on('message', (_m, rinfo) => udp.send(JSON.stringify(seenBy(id, 'udp', port, rinfo.address)), rinfo.port, rinfo.address));
    return udp.bind({ fd: boundSocket(ns, 'udp', address, port) });
  });
}

/** A pod as the node's runtime is asked to run it. */
export interface PodRun {
  pod: string;
  node: string;
  /** Its network namespace, as a path. */
  ns: string;
  containers: string[];
  ports?: AppPort[];
  /** Where its containers' probe sockets go: `<dir>/<container>.sock`. */
  dir: string;
}

interface Running {
  servers: Server[];
  udp: UdpSocket[];
  sockets: string[];
}

/** Every pod of one node: what each has open, so that a pod stops as a whole. */
export class Runtime {
  private readonly pods = new Map<string, Running>();

  /** Opens the pod's listeners in its namespace and its probe sockets; a pod already running starts afresh. */
  async run(r: PodRun): Promise<void> {
    this.stop(r.pod);
    const running: Running = { servers: [], udp: [], sockets: [] };
    this.pods.set(r.pod, running);
    try {
      // Ping sockets for everyone in the pod, as containerd sets up each pod it runs.
      await apply(new Plan().add(setSysctl({ ns: r.ns, key: 'net.ipv4.ping_group_range', value: '0 2147483647' })));
      for (const container of r.containers) {
        const id = { pod: r.pod, node: r.node, container };
        if (container === 'sidecar') running.servers.push(http(id, boundSocket(r.ns, 'tcp', '127.0.0.1', SIDECAR_PORT)));
        else {
          const all = [{ port: APP_PORT, protocol: 'TCP' }, { port: APP_PORT, protocol: 'UDP' }, ...(r.ports ?? [])];
          for (const p of new Map(all.map((x) => [`${x.port}/${x.protocol}`, x])).values()) {
            if (p.protocol === 'TCP') running.servers.push(http(id, boundSocket(r.ns, 'tcp', '0.0.0.0', p.port)));
            else running.udp.push(...(await udpServers(id, r.ns, p.port)));
          }
        }
      }
      for (const container of r.containers) {
        const path = join(r.dir, `${container}.sock`);
        running.servers.push(controlServer(path, r.ns));
        running.sockets.push(path);
      }
    } catch (e) {
      this.stop(r.pod);
      throw e;
    }
  }

  /** Closes every socket of the pod (and the connections they hold); false if it was not running. */
  stop(pod: string): boolean {
    const running = this.pods.get(pod);
    if (!running) return false;
    this.pods.delete(pod);
    for (const s of running.servers) {
      s.close();
      if ('closeAllConnections' in s) (s as HttpServer).closeAllConnections();
    }
    for (const u of running.udp) u.close();
    for (const path of running.sockets) rmSync(path, { force: true });
    return true;
  }

  get size(): number {
    return this.pods.size;
  }
}

/** What the runtime's own socket takes: one JSON request, then end; it answers one JSON line. */
export type RuntimeRequest = ({ op: 'run' } & PodRun) | { op: 'stop'; pod: string };
export type RuntimeAnswer = { ok: true } | { ok: false; error: string };

/** The node's runtime at `path`: runs and stops pods on request. */
export function serveRuntime(path: string): Runtime {
  const runtime = new Runtime();
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true });
  createServer({ allowHalfOpen: true }, (sock) => {
    let body = '';
    sock.on('data', (d: Buffer) => (body += d.toString()));
    sock.on('error', () => undefined);
    sock.on('end', () => {
      let req: RuntimeRequest;
      try {
        req = JSON.parse(body) as RuntimeRequest;
      } catch {
        sock.end();
        return;
      }
      const work = req.op === 'run' ? runtime.run(req) : Promise.resolve(void runtime.stop(req.pod));
      void work.then(
        () => sock.end(JSON.stringify({ ok: true } satisfies RuntimeAnswer)),
        (e: Error) => sock.end(JSON.stringify({ ok: false, error: e.message } satisfies RuntimeAnswer)),
      );
    });
  }).listen(path);
  return runtime;
}

/** Sends one request to the runtime at `path`. */
export function askRuntime(path: string, req: RuntimeRequest): Promise<RuntimeAnswer> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    let body = '';
    sock.on('connect', () => sock.end(JSON.stringify(req)));
    sock.on('data', (d: Buffer) => (body += d.toString()));
    sock.on('end', () => {
      try {
        resolve(JSON.parse(body) as RuntimeAnswer);
      } catch {
        resolve({ ok: false, error: `the runtime at ${path} gave no answer` });
      }
    });
    sock.on('error', (e) => resolve({ ok: false, error: `the runtime at ${path}: ${e.message}` }));
  });
}

/**
 * Asks the container behind `control` to run a probe, or a ping, from inside its pod; or a list of
 * them, all at once, in one request (the results in the same order).
 */
export function probeFrom(control: string, p: Probe): Promise<ProbeResult>;
export function probeFrom(control: string, p: Ping): Promise<PingResult>;
export function probeFrom(control: string, p: Probe[]): Promise<ProbeResult[]>;
export function probeFrom(control: string, p: (Probe | Ping)[]): Promise<(ProbeResult | PingResult)[]>;
export function probeFrom(control: string, p: Probe | Ping | (Probe | Ping)[]): Promise<ProbeResult | PingResult | (ProbeResult | PingResult)[]> {
  const failed = (error: string) => {
    const r = { ok: false as const, error: `probe agent at ${control}: ${error}`, ms: 0 };
    return Array.isArray(p) ? p.map(() => r) : r;
  };
  return new Promise((resolve) => {
    const sock = createConnection(control);
    let body = '';
    sock.on('connect', () => sock.end(JSON.stringify(p)));
    sock.on('data', (d: Buffer) => (body += d.toString()));
    sock.on('end', () => {
      try {
        resolve(JSON.parse(body) as ProbeResult | PingResult | (ProbeResult | PingResult)[]);
      } catch {
        resolve(failed('gave no answer'));
      }
    });
    sock.on('error', (e) => resolve(failed(e.message)));
  });
}
