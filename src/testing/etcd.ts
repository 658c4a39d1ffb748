import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdServerOptions {
  /** Command etcd runs under, e.g. ['ip', 'netns', 'exec', 'weft-lab-etcd'] to start it inside a namespace. */
  commandPrefix?: string[];
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /**
   * Ports default to free ones on `host` when etcd runs in this process's namespace, and to
   * 2379/2380 under a `commandPrefix` (the namespace is its own, and ours says nothing about it).
   */
  clientPort?: number;
  peerPort?: number;
  /** Serve clients over TLS and require client certificates signed by `caFile`. */
  tls?: { certFile: string; keyFile: string; caFile: string };
  binary?: string;
  startTimeoutMs?: number;
}

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:41234. */
  endpoint: string;
  dataDir: string;
  pid: number;
  /** Kills etcd and removes its data directory; safe to call more than once. */
  stop(): Promise<void>;
}

const running = new Set<{ child: ChildProcess; dir: string }>();
let exitHooksInstalled = false;

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x', arm: 'arm', ia32: '386' };

/** Starts a throwaway single-member etcd and resolves once it serves clients. */
export async function startEtcd(options: EtcdServerOptions = {}): Promise<EtcdServer> {
  const pickPorts = options.commandPrefix === undefined && (options.clientPort === undefined || options.peerPort === undefined);
  // A free port found here can be taken by someone else before etcd binds it; try a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      if (!pickPorts || attempt === 3 || !(err instanceof PortInUseError)) throw err;
    }
  }
}

class PortInUseError extends Error {}

async function startOnce(options: EtcdServerOptions): Promise<EtcdServer> {
  const host = options.host ?? '127.0.0.1';
  const local = options.commandPrefix === undefined;
  const clientPort = options.clientPort ?? (local ? await freePort(host) : 2379);
  const peerPort = options.peerPort ?? (local ? await freePort(host) : 2380);
  const scheme = options.tls ? 'https' : 'http';
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const endpoint = `${scheme}://${hostPart}:${clientPort}`;
  const peerUrl = `http://${hostPart}:${peerPort}`;
  const dir = await mkdtemp(join(tmpdir(), 'weft-etcd-'));
  const args = [
    '--name',
    'weft-test',
    '--data-dir',
    join(dir, 'data'),
    '--listen-client-urls',
    endpoint,
    '--advertise-client-urls',
    endpoint,
    '--listen-peer-urls',
    peerUrl,
    '--initial-advertise-peer-urls',
    peerUrl,
    '--initial-cluster',
    `weft-test=${peerUrl}`,
    '--initial-cluster-state',
    'new',
    // etcd's shortest lease TTL is 1.5 election timeouts rounded up to whole seconds; these make it 1 s.
    '--heartbeat-interval',
    '10',
    '--election-timeout',
    '50',
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
    ...(options.tls
      ? ['--cert-file', options.tls.certFile, '--key-file', options.tls.keyFile, '--trusted-ca-file', options.tls.caFile, '--client-cert-auth']
      : []),
  ];
  const command = [...(options.commandPrefix ?? []), options.binary ?? '/usr/bin/etcd', ...args];
  const child = spawn(command[0]!, command.slice(1), {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ETCD_UNSUPPORTED_ARCH: GOARCH[process.arch] ?? process.arch },
  });
  const entry = { child, dir };
  running.add(entry);
  installExitHooks();

  let log = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
    running.delete(entry);
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timeoutMs = options.startTimeoutMs ?? 20_000;
      const timer = setTimeout(() => reject(new Error(`etcd did not start serving within ${timeoutMs} ms:\n${log.slice(-4000)}`)), timeoutMs);
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => {
        log = (log + chunk).slice(-65536);
        if (/serving client traffic/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const message = `etcd exited (${signal ?? `code ${code}`}) before serving:\n${log.slice(-4000)}`;
        reject(/address already in use/.test(log) ? new PortInUseError(message) : new Error(message));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint, dataDir: dir, pid: child.pid!, stop };
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function killAllNow(): void {
  for (const { child, dir } of running) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  running.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.once('exit', killAllNow);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    // `once` removes this listener before it runs, so re-raising gets the default action (exit).
    process.once(signal, () => {
      killAllNow();
      process.kill(process.pid, signal);
    });
  }
}

/**
 * One call to etcd's JSON gateway at `endpoint`: the tests' own view of etcd, beside the store under
 * test (compaction, lease TTLs, bulk writes). Keys and values in `body` are base64.
 */
export async function etcdGateway<T>(endpoint: string, path: string, body: unknown): Promise<T> {
  const res = await fetch(`${endpoint}${path}`, { method: 'POST', body: JSON.stringify(body) });
  const json = (await res.json()) as T & { message?: string };
  if (!res.ok) throw new Error(`etcd ${path} answered ${res.status}: ${json.message ?? 'no message'}`);
  return json;
}

export const base64 = (s: string): string => Buffer.from(s).toString('base64');

/** The key's value and lease ID as etcd holds them, or undefined. */
export async function etcdGet(endpoint: string, key: string): Promise<{ value: string; lease: string } | undefined> {
  const r = await etcdGateway<{ kvs?: { value?: string; lease?: string }[] }>(endpoint, '/v3/kv/range', { key: base64(key) });
  const kv = r.kvs?.[0];
  return kv && { value: Buffer.from(kv.value ?? '', 'base64').toString(), lease: kv.lease ?? '0' };
}

/** Discards etcd's history before `revision`, as a compaction by an operator would. */
export async function etcdCompact(endpoint: string, revision: number): Promise<void> {
  await etcdGateway(endpoint, '/v3/kv/compaction', { revision: String(revision), physical: true });
}
