import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { CNI_SOCKET } from '../util/paths.js';
import { handle, type PluginName } from './dispatch.js';

/** Parses the front's request (see native/cni-front.c): "WEFT1\0" plugin "\0" {CNI_*=v "\0"} "\0" stdin. */
export function parseRequest(data: Buffer): { plugin: PluginName; env: Record<string, string>; stdin: string } {
  let at = 0;
  const next = (): string => {
    const end = data.indexOf(0, at);
    if (end < 0) throw new Error('truncated request');
    const s = data.subarray(at, end).toString();
    at = end + 1;
    return s;
  };
  if (next() !== 'WEFT1') throw new Error('not a weft CNI request');
  const plugin = next() === 'weft-ipam' ? 'weft-ipam' : 'weft';
  const env: Record<string, string> = {};
  for (let kv = next(); kv !== ''; kv = next()) {
    const eq = kv.indexOf('=');
    if (kv.startsWith('CNI_') && eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return { plugin, env, stdin: data.subarray(at).toString() };
}

/** Whether something answers on the socket; a stale file from a dead server is not an answer. */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.on('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

/**
 * The served path: a warm process that runs CNI invocations for the thin front. Requests run
 * concurrently; IPAM serializes itself per network. The socket is root-only, since whoever can
 * write to it can wire any namespace.
 */
export async function serveCni(path = CNI_SOCKET, log: (msg: string) => void = () => undefined): Promise<Server> {
  if (await listening(path)) throw new Error(`another weft server already listens on ${path}; stop it first or choose another --socket`);
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  rmSync(path, { force: true });
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', () => undefined);
    sock.on('end', () => {
      let req;
      try {
        req = parseRequest(Buffer.concat(chunks));
      } catch (e) {
        sock.destroy();
        log(`bad request: ${(e as Error).message}`);
        return;
      }
      const started = performance.now();
      void handle(req).then((res) => {
        log(`${req.plugin} ${req.env.CNI_COMMAND} ${req.env.CNI_CONTAINERID ?? ''} exit=${res.exitCode} ${(performance.now() - started).toFixed(1)}ms`);
        sock.end(Buffer.concat([Buffer.from([res.exitCode]), Buffer.from(res.stdout)]));
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}
