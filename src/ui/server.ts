import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readStatus } from '../agent/status.js';
import { netnsPath } from '../kernel/netns.js';
import { addrs, links, routes } from '../kernel/state.js';
import { nodeFiles } from '../lab/build.js';
import { registryWatch, type RegistryView } from '../lab/registry.js';
import { labDir, LabError, readState, type LabState } from '../lab/state.js';
import type { TraceProto } from '../trace/types.js';
import { buildGraph, type UiGraph } from './graph.js';

/**
 * `weft ui`: one node:http server for one lab. The page and its bundle (cytoscape + ELK, built by
 * scripts/build-front.mjs into build/ui) come from the package. The graph is rebuilt whenever
 * state.json changes (a watch on the lab dir), the registry changes (registryWatch), or a node's
 * devices change (a read every second, over rtnetlink), and pushed to every page over server-sent
 * events only when it differs from the last one.
 */
export const ASSETS = fileURLToPath(new URL('../../../build/ui/', import.meta.url));

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };
const FILES: Record<string, string> = { '/': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface UiServer {
  url: string;
  server: Server;
  close: () => Promise<void>;
}

const PROTOS: TraceProto[] = ['tcp', 'udp', 'icmp'];

/** A few series the page draws, each a PromQL range query over the last 5 minutes. */
const SERIES = [
  // Since the agent started: pods are added now and then, so a rate over a minute is mostly empty.
  {
    title: 'CNI ADD latency, mean (s)',
    query: 'sum by (node) (weft_cni_request_duration_seconds_sum{command="ADD"}) / sum by (node) (weft_cni_request_duration_seconds_count{command="ADD"})',
  },
  { title: 'reconcile duration, p95 (s)', query: 'histogram_quantile(0.95, sum by (le, node) (rate(weft_reconcile_duration_seconds_bucket[1m])))' },
  { title: 'agents up', query: 'up{job="weft-agent"}' },
];

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req) {
    text += String(chunk);
    if (text.length > 65_536) throw new HttpError(413, 'request body too large');
  }
  try {
    const v = JSON.parse(text || '{}') as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch {
    throw new HttpError(400, 'the request body is not a JSON object');
  }
}

/**
 * Why a request may not come from another site's page in the same browser: on loopback, a Host
 * header naming another host (a DNS name rebound to 127.0.0.1); and a POST (trace, verify: they send
 * traffic in the lab) must be JSON, which a page elsewhere cannot send without a CORS preflight that
 * this server never answers, and must not carry another Origin.
 */
function foreign(req: IncomingMessage, listen: string): string | undefined {
  const name = (req.headers.host ?? '').replace(/:\d+$/, '');
  if ((listen.startsWith('127.') || listen === '::1') && !['localhost', '127.0.0.1', '[::1]', listen].includes(name))
    return `Host ${name} is not this server's loopback address`;
  if (req.method !== 'POST') return undefined;
  if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) return 'POST requests must be application/json';
  if (req.headers.origin && req.headers.origin !== `http://${req.headers.host ?? ''}`) return `requests from ${req.headers.origin} are refused`;
  return undefined;
}

export async function serveUi(lab: string, host: string, port: number): Promise<UiServer> {
  readState(lab);
  const clients = new Set<ServerResponse>();
  let graph: UiGraph | { error: string } = { error: 'starting' };
  let text = '';
  let view: RegistryView | undefined;
  let registryNote: string | undefined;
  let watcher: { stop: () => void } | undefined;
  let retry: NodeJS.Timeout | undefined;
  let closed = false;
  let verifying = false;

  const broadcast = (event: string, data: string) => {
    for (const c of clients) c.write(`event: ${event}\ndata: ${data}\n\n`);
  };

  let rebuilding: Promise<void> | undefined;
  let again = false;
  /** One rebuild at a time; a change during one asks for one more. */
  const rebuild = (): Promise<void> => {
    if (rebuilding) {
      again = true;
      return rebuilding;
    }
    rebuilding = (async () => {
      do {
        again = false;
        try {
          graph = await buildGraph(readState(lab), view, registryNote);
        } catch (e) {
          graph = { error: (e as Error).message };
        }
        const next = JSON.stringify(graph);
        if (next !== text) broadcast('graph', next);
        text = next;
      } while (again && !closed);
    })().finally(() => (rebuilding = undefined));
    return rebuilding;
  };

  // Follows the registry while the lab exists; a lab taken down and made again is followed again.
  const follow = () => {
    let s: LabState;
    try {
      s = readState(lab);
    } catch {
      if (!closed) retry = setTimeout(follow, 2000);
      return;
    }
    if (s.backend === 'macvlan' || closed) return;
    watcher = registryWatch(
      s,
      (v) => {
        view = v;
        registryNote = undefined;
        void rebuild();
      },
      (why) => {
        watcher = undefined;
        if (closed) return;
        registryNote = `the registry is not answering: ${why.split('\n').pop() ?? why}`;
        void rebuild();
        retry = setTimeout(follow, 2000);
      },
    );
  };

  // readState above found the lab dir; its removal (lab down) ends the watch, and the tick carries on.
  const dirWatch: FSWatcher = watch(labDir(lab), () => void rebuild()).on('error', () => dirWatch.close());
  const tick = setInterval(() => void rebuild(), 1000);
  follow();
  await rebuild();

  const api = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const s = () => {
      try {
        return readState(lab);
      } catch (e) {
        throw new HttpError(404, (e as Error).message);
      }
    };
    if (req.method === 'GET' && path === '/api/graph') return send(res, 200, graph);
    if (req.method === 'GET' && path === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(`event: graph\ndata: ${text}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    const nodeName = /^\/api\/node\/([\w.-]+)$/.exec(path)?.[1];
    if (req.method === 'GET' && nodeName) {
      const state = s();
      const node = state.nodes.find((n) => n.name === nodeName);
      if (!node) throw new HttpError(404, `lab ${lab} has no node ${nodeName}`);
      const ns = netnsPath(node.ns);
      const [r, a, l, status] = await Promise.all([
        routes(ns).catch(() => []),
        addrs(ns).catch(() => []),
        links(ns).catch(() => []),
        readStatus(nodeFiles(state, node).dir, 3000).catch((e: Error) => ({ error: e.message })),
      ]);
      return send(res, 200, { node, routes: r, addrs: a, links: l, agent: status });
    }
    const podName = /^\/api\/pod\/([\w.-]+)$/.exec(path)?.[1];
    if (req.method === 'GET' && podName) {
      const pod = s().pods.find((p) => p.name === podName);
      if (!pod) throw new HttpError(404, `lab ${lab} has no pod ${podName}`);
      const ns = netnsPath(pod.ns);
      const [r, a] = await Promise.all([routes(ns).catch(() => []), addrs(ns).catch(() => [])]);
      const record = view?.pods.find((p) => p.name === pod.name && p.namespace === (pod.namespace ?? 'default'));
      return send(res, 200, { pod, record, routes: r, addrs: a });
    }
    if (req.method === 'POST' && path === '/api/trace') {
      const b = await body(req);
      const { src, dst } = b;
      const proto = b.proto ?? 'tcp';
      const port = b.port === undefined || b.port === '' ? undefined : Number(b.port);
      if (typeof src !== 'string' || typeof dst !== 'string' || !src || !dst) throw new HttpError(400, 'trace needs "src" and "dst"');
      if (!PROTOS.includes(proto as TraceProto)) throw new HttpError(400, `"proto" is ${PROTOS.join(', ')}`);
      if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new HttpError(400, '"port" is 1 to 65535');
      const { traceLab } = await import('../trace/trace.js');
      const controller = new AbortController();
      res.on('close', () => controller.abort(new Error('the page went away')));
      const r = await traceLab(s(), src, dst, { proto: proto as TraceProto, ...(port !== undefined && { port }), signal: controller.signal });
      return send(res, 200, r);
    }
    if (req.method === 'POST' && path === '/api/verify') {
      if (verifying) throw new HttpError(409, 'verify is already running for this lab');
      verifying = true;
      broadcast('verify', JSON.stringify({ running: true }));
      try {
        const { verify } = await import('../lab/verify.js');
        const { results } = await verify(lab);
        broadcast('verify', JSON.stringify({ running: false }));
        return send(res, 200, { results });
      } catch (e) {
        broadcast('verify', JSON.stringify({ running: false }));
        throw e;
      } finally {
        verifying = false;
      }
    }
    if (req.method === 'GET' && path === '/api/metrics') {
      const state = s();
      if (!state.monitoring) return send(res, 200, { monitoring: false, note: `lab ${lab} has no Prometheus; start it with: weft lab up --monitoring` });
      const { promQuery } = await import('../lab/monitoring.js');
      const end = Date.now() / 1000;
      const series = await Promise.all(
        SERIES.map(async (x) => {
          const q = `/api/v1/query_range?query=${encodeURIComponent(x.query)}&start=${end - 300}&end=${end}&step=5`;
          try {
            return { ...x, data: await promQuery(state, q) };
          } catch (e) {
            return { ...x, error: (e as Error).message };
          }
        }),
      );
      return send(res, 200, { monitoring: true, at: `${state.monitoring.ip}:${state.monitoring.port}`, series });
    }
    throw new HttpError(404, `no ${req.method ?? ''} ${path}`);
  };

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const refused = foreign(req, host);
    if (refused) return send(res, 403, { error: refused });
    if (path === '/favicon.ico') return void res.writeHead(204).end();
    const file = FILES[path];
    if (req.method === 'GET' && file) {
      try {
        const data = readFileSync(join(ASSETS, file));
        res.writeHead(200, { 'content-type': TYPES[file.slice(file.lastIndexOf('.'))]!, 'cache-control': 'no-store' });
        res.end(data);
      } catch {
        send(res, 500, { error: `the page's ${file} is not built (${ASSETS}); run: npm run build` });
      }
      return;
    }
    api(req, res, path).catch((e: Error) => {
      const status = e instanceof HttpError ? e.status : e instanceof LabError ? 422 : 500;
      if (!res.headersSent) send(res, status, { error: e.message });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const keepAlive = setInterval(() => {
    for (const c of clients) c.write(': keep-alive\n\n');
  }, 15_000);
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/`,
    server,
    close: async () => {
      closed = true;
      clearInterval(tick);
      clearInterval(keepAlive);
      clearTimeout(retry);
      dirWatch.close();
      watcher?.stop();
      for (const c of clients) c.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rebuilding;
    },
  };
}
