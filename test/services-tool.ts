/**
 * The in-namespace half of the Services tests, one process per namespace, started once and spoken
 * to one JSON request per line on stdin (answers: one JSON line with the request's id):
 *
 *   services-tool.js registry ENDPOINT   (the lab's etcd namespace): the Registry API over Weft's prefix
 *   services-tool.js client              (a pod, a node or `outside`): probes and held connections
 *
 * Probes talk to the lab workload (HTTP and UDP on port 80, answering with who it is and the client
 * address it saw). UDP probes use a connected socket, so an ICMP port unreachable shows as ECONNREFUSED.
 */
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { Seen } from '../src/lab/workload.js';

export type Answer = { ok: true; seen: Seen; ms: number; code?: undefined } | { ok: false; error: string; code?: string; ms: number };

export type ToolRequest =
  | { op: 'apply'; docs: object[] }
  | { op: 'call'; method: string; args: unknown[] }
  | { op: 'probe'; proto: 'tcp' | 'udp'; host: string; port: number; timeoutMs?: number; srcPort?: number; count?: number }
  | { op: 'open'; conn: string; host: string; port: number; timeoutMs?: number }
  | { op: 'again'; conn: string; timeoutMs?: number }
  | { op: 'close'; conn: string };

const parseSeen = (text: string): Seen => JSON.parse(text) as Seen;

function udpProbe(host: string, port: number, timeoutMs: number, srcPort?: number): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve) => {
    const sock = createSocket({ type: 'udp4', reuseAddr: true });
    let done = false;
    const finish = (a: { ok: true; seen: Seen } | { ok: false; error: string; code?: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve({ ...a, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no answer within ${timeoutMs} ms`, code: 'TIMEOUT' }), timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.message, ...(e.code ? { code: e.code } : {}) }));
    sock.on('message', (m) => {
      try {
        finish({ ok: true, seen: parseSeen(m.toString()) });
      } catch {
        finish({ ok: false, error: `unexpected answer ${m.toString().slice(0, 80)}` });
      }
    });
    sock.bind(srcPort ?? 0, () => sock.connect(port, host, () => sock.send('who')));
  });
}

/** One HTTP/1.1 keep-alive exchange on `sock`: a GET, then the JSON body of the answer. */
function exchange(sock: Socket, timeoutMs: number): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve) => {
    let buf = '';
    const finish = (a: { ok: true; seen: Seen } | { ok: false; error: string; code?: string }) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
      resolve({ ...a, ms: performance.now() - started });
    };
    const onData = (d: Buffer) => {
      buf += d.toString();
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = Number(/content-length: *(\d+)/i.exec(buf.slice(0, head))?.[1] ?? NaN);
      const body = buf.slice(head + 4);
      if (Number.isNaN(len)) finish({ ok: false, error: 'answer without content-length' });
      else if (body.length >= len) finish({ ok: true, seen: parseSeen(body.slice(0, len)) });
    };
    const onError = (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.message, ...(e.code ? { code: e.code } : {}) });
    const onClose = () => finish({ ok: false, error: 'connection closed', code: 'CLOSED' });
    const timer = setTimeout(() => finish({ ok: false, error: `no answer within ${timeoutMs} ms`, code: 'TIMEOUT' }), timeoutMs);
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.write('GET / HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive\r\n\r\n');
  });
}

function tcpConnect(host: string, port: number, timeoutMs: number): Promise<{ sock?: Socket; failed?: Answer }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ failed: { ok: false, error: `no connection within ${timeoutMs} ms`, code: 'TIMEOUT', ms: performance.now() - started } });
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve({ sock });
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ failed: { ok: false, error: e.message, ...(e.code ? { code: e.code } : {}), ms: performance.now() - started } });
    });
  });
}

async function tcpProbe(host: string, port: number, timeoutMs: number): Promise<Answer> {
  const started = performance.now();
  const c = await tcpConnect(host, port, timeoutMs);
  if (!c.sock) return c.failed!;
  const a = await exchange(c.sock, timeoutMs);
  c.sock.destroy();
  return { ...a, ms: performance.now() - started };
}

async function client(): Promise<void> {
  const conns = new Map<string, Socket>();
  await serve(async (r) => {
    switch (r.op) {
      case 'probe': {
        const one = () => (r.proto === 'udp' ? udpProbe(r.host, r.port, r.timeoutMs ?? 1500, r.srcPort) : tcpProbe(r.host, r.port, r.timeoutMs ?? 1500));
        const out: Answer[] = [];
        for (let i = 0; i < (r.count ?? 1); i++) out.push(await one());
        return out;
      }
      case 'open': {
        const c = await tcpConnect(r.host, r.port, r.timeoutMs ?? 1500);
        if (!c.sock) return c.failed;
        c.sock.setKeepAlive(true, 1000);
        conns.set(r.conn, c.sock);
        return exchange(c.sock, r.timeoutMs ?? 1500);
      }
      case 'again': {
        const sock = conns.get(r.conn);
        if (!sock || sock.destroyed) return { ok: false, error: 'connection closed', code: 'CLOSED', ms: 0 };
        return exchange(sock, r.timeoutMs ?? 1500);
      }
      case 'close':
        conns.get(r.conn)?.destroy();
        conns.delete(r.conn);
        return true;
      default:
        throw new Error(`client does not do ${r.op}`);
    }
  });
}

async function registry(endpoint: string): Promise<void> {
  const { EtcdStore } = await import('../src/store/etcd.js');
  const { Registry, DEFAULT_REGISTRY_PREFIX } = await import('../src/service/registry.js');
  const { parseManifests } = await import('../src/service/manifest.js');
  const store = new EtcdStore({ endpoints: [endpoint], prefix: DEFAULT_REGISTRY_PREFIX });
  const reg = new Registry(store) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  await serve(async (r) => {
    if (r.op === 'apply') return reg.applyManifests!(parseManifests(r.docs.map((d) => JSON.stringify(d)).join('\n---\n'), 'test'));
    if (r.op === 'call') {
      const out: unknown = await reg[r.method]!(...r.args);
      return out instanceof Map ? (Object.fromEntries(out) as unknown) : out;
    }
    throw new Error(`registry does not do ${r.op}`);
  });
  await store.close();
}

async function serve(handle: (r: ToolRequest) => Promise<unknown>): Promise<void> {
  const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
  say({ ready: true });
  const pending: Promise<unknown>[] = [];
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const { id, ...r } = JSON.parse(line) as ToolRequest & { id: number };
    pending.push(
      handle(r).then(
        (result) => say({ id, result }),
        (e: Error) => say({ id, error: e.message }),
      ),
    );
  }
  await Promise.all(pending);
}

const [role, arg] = process.argv.slice(2);
if (role === 'registry' && arg) await registry(arg);
else if (role === 'client') await client();
else {
  process.stderr.write('usage: services-tool.js registry ENDPOINT | client\n');
  process.exit(2);
}
