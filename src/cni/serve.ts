import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createConnection, createServer, isIPv4, type Server } from 'node:net';
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

/** A hook slower than this no longer holds up the answer (it goes on in the background). */
const HOOK_WAIT_MS = 2000;

/** Runs the hook before the answer, so a pod is registered when ADD returns; a slow or failing store never fails the call. */
export async function runHooks(hooks: CniHooks, env: Record<string, string>, stdout: string, log: (msg: string) => void, waitMs = HOOK_WAIT_MS): Promise<void> {
  const what = `${env.CNI_COMMAND} hook for ${env.CNI_CONTAINERID ?? ''}`;
  const run = (async () => {
    if (env.CNI_COMMAND === 'ADD') await hooks.added?.(env, resultIp(stdout));
    else if (env.CNI_COMMAND === 'DEL') await hooks.deleted?.(env);
  })().catch((e: Error) => log(`${what} failed: ${e.message}`));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log(`${what} still running after ${waitMs} ms; answering`);
      resolve();
    }, waitMs);
  });
  await Promise.race([run, late]);
  clearTimeout(timer);
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

/** Called after a successful ADD (with the pod's IPv4 address from the result, if any) or DEL of the weft plugin. */
export interface CniHooks {
  added?(env: Record<string, string>, ip: string | undefined): unknown;
  deleted?(env: Record<string, string>): unknown;
  /** Called for every request, plugin failures included, once its answer is ready. */
  answered?(r: { plugin: PluginName; env: Record<string, string>; exitCode: number; stdout: string; seconds: number }): void;
}

/** The first IPv4 address of an ADD result (`ips[].address`, "10.244.1.5/24"), without its prefix length. */
export function resultIp(stdout: string): string | undefined {
  try {
    const ips = (JSON.parse(stdout) as { ips?: { address?: unknown }[] }).ips ?? [];
    return ips.map((i) => (typeof i.address === 'string' ? i.address.split('/')[0]! : '')).find((a) => isIPv4(a));
  } catch {
    return undefined;
  }
}

/**
 * The served path: a warm process that runs CNI invocations for the thin front. Requests run
 * concurrently; IPAM serializes itself per network. The socket is root-only, since whoever can
 * write to it can wire any namespace. `hooks` run after the weft plugin succeeded, before the answer
 * (waited for at most 2 s); their failures are logged only.
 */
export async function serveCni(path = CNI_SOCKET, log: (msg: string) => void = () => undefined, hooks: CniHooks = {}): Promise<Server> {
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
      void handle(req).then(async (res) => {
        if (res.exitCode === 0 && req.plugin === 'weft') await runHooks(hooks, req.env, res.stdout, log);
        const ms = performance.now() - started;
        log(`${req.plugin} ${req.env.CNI_COMMAND} ${req.env.CNI_CONTAINERID ?? ''} exit=${res.exitCode} ${ms.toFixed(1)}ms`);
        hooks.answered?.({ plugin: req.plugin, env: req.env, exitCode: res.exitCode, stdout: res.stdout, seconds: ms / 1000 });
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
