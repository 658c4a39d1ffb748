import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname } from 'node:path';
import { flockExclusive } from '../cni/ipam/flock.js';
import { createNetns, netnsPath, netnsPids, signalNetns } from '../kernel/netns.js';
import { waitFor } from '../util/wait.js';
import { etcdArgv, etcdLog, nodeDaemonArgv, nodeFiles, OUTSIDE_POD, runtimeArgv, runtimeOf, subnetOf, underlayPods } from './build.js';
import { etcdMembers, LabError, podDir, type EtcdMember, type LabState, type NodeState } from './state.js';
import { askRuntime, type AppPort } from './workload.js';

/** A process of the lab: it outlives the command that started it; `exited` is set if it ends while we watch. */
interface Daemon {
  pid: number;
  exited?: string;
}

/** Starts `argv` inside namespace `ns`, detached from this command, logging to `log`. */
export function daemon(ns: string, argv: string[], log: string): Daemon {
  const fd = openSync(log, 'a');
  // `ip netns exec` execs argv in place, so the pid is the process's own.
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { detached: true, stdio: ['ignore', fd, fd] });
  const d: Daemon = { pid: child.pid! };
  child.on('exit', (code, signal) => (d.exited = signal ? `was killed by ${signal}` : `exited with code ${code}`));
  child.unref();
  return d;
}

/** True when something accepts a connection on the unix socket `path`. */
export function socketAnswers(path: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => done(true));
    sock.on('error', () => done(false));
  });
}

/** Throws if the operation was interrupted (the CLI aborts `signal` on SIGINT/SIGTERM). */
export function interrupted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new LabError('interrupted', signal.reason instanceof Error ? signal.reason.message : 'interrupted');
}

/** The last lines of a log, quoted in an error (a rollback removes the log itself). */
function logTail(log: string, lines = 3): string {
  try {
    const tail = readFileSync(log, 'utf8').trim().split('\n').slice(-lines).join('\n  ');
    return tail ? `; ${log} ends with:\n  ${tail}` : `; ${log} is empty`;
  } catch {
    return '';
  }
}

/**
 * Waits until `check` holds. Gives up at once when `signal` aborts or the `daemon` we wait on exits,
 * and after `timeoutMs`; the error quotes the end of the daemon's `log`.
 */
export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  o: { timeoutMs: number; log: string; signal?: AbortSignal; daemon?: Daemon },
): Promise<void> {
  const state = await waitFor(async () => (o.signal?.aborted ? 'aborted' : o.daemon?.exited ? 'exited' : (await check()) && 'ok'), {
    timeoutMs: o.timeoutMs,
    intervalMs: 25,
    what,
  }).catch((e: Error) => {
    throw new LabError('timeout', `${e.message}${logTail(o.log)}`);
  });
  interrupted(o.signal);
  if (state === 'exited') throw new LabError('exited', `${what} failed: the process ${o.daemon!.exited} before it was ready${logTail(o.log)}`);
}

/**
 * The lab's etcd members (all of them, or only `only`), each with its data dir (a restarted one keeps
 * every lease). They start together: a member of a new cluster waits for the others before it serves.
 * Ready when each log says so.
 */
export async function startEtcd(s: LabState, signal?: AbortSignal, only?: EtcdMember[]): Promise<void> {
  await Promise.all(
    (only ?? etcdMembers(s)).map(async (m) => {
      const log = etcdLog(s, m);
      const from = existsSync(log) ? statSync(log).size : 0;
      const d = daemon(m.ns, etcdArgv(s, m), log);
      await until(`etcd ${m.name} start`, () => readFileSync(log).subarray(from).includes('ready to serve client requests'), {
        timeoutMs: 20_000,
        log,
        signal,
        daemon: d,
      });
    }),
  );
}

/**
 * The runtime of `node` (a lab node, or the outside world): started unless it answers. Whatever
 * still runs in its namespace without answering (a hung one) goes first. Commands that start it at
 * once take turns on its lock file, so a node never gets two.
 */
export async function startRuntime(s: LabState, node: string, signal?: AbortSignal): Promise<void> {
  const r = runtimeOf(s, node);
  mkdirSync(dirname(r.lock), { recursive: true });
  const fd = openSync(r.lock, 'a');
  try {
    await flockExclusive(fd);
    if (await socketAnswers(r.socket)) return;
    if (existsSync(netnsPath(r.ns))) {
      await signalNetns(r.ns, 'SIGKILL');
      await waitFor(async () => (await netnsPids(r.ns)).length === 0, { timeoutMs: 10_000, what: `the old runtime of ${node} to go` });
    } else await createNetns(r.ns);
    const d = daemon(r.ns, runtimeArgv(r), r.log);
    await until(`the runtime of ${node}`, () => socketAnswers(r.socket), { timeoutMs: 60_000, log: r.log, signal, daemon: d });
  } finally {
    closeSync(fd);
  }
}

/** A pod's containers (or the outside world's one), run by its node's runtime: ready when each answers on its probe socket. */
export async function startContainers(
  s: LabState,
  pod: { name: string; node: string; ns: string; containers: string[]; ports?: AppPort[] },
  signal?: AbortSignal,
): Promise<void> {
  await startRuntime(s, pod.node, signal);
  const dir = podDir(s.name, pod.name);
  mkdirSync(dir, { recursive: true });
  const { containers, ports } = pod;
  const a = await askRuntime(runtimeOf(s, pod.node).socket, { op: 'run', pod: pod.name, node: pod.node, ns: netnsPath(pod.ns), containers, ports, dir });
  if (!a.ok) throw new LabError('container', `the containers of ${pod.name} did not start on ${pod.node}: ${a.error}`);
  interrupted(signal);
}

/** Closes a pod's sockets in its node's runtime, if that runs. */
export async function stopContainers(s: LabState, pod: { name: string; node: string }): Promise<void> {
  const { socket } = runtimeOf(s, pod.node);
  if (await socketAnswers(socket)) {
    const a = await askRuntime(socket, { op: 'stop', pod: pod.name });
    if (!a.ok) throw new LabError('container', `the containers of ${pod.name} did not stop on ${pod.node}: ${a.error}`);
  }
}

export const outsidePod = (s: LabState) => ({ name: OUTSIDE_POD, node: OUTSIDE_POD, ns: s.outside.ns, containers: ['app'] });

/**
 * The node's agent (overlay; ready once it holds a lease and serves CNI) or CNI server (underlay).
 * Returns the node's pod subnet.
 */
export async function startNodeDaemon(s: LabState, node: NodeState, signal?: AbortSignal): Promise<string | undefined> {
  const f = nodeFiles(s, node);
  mkdirSync(f.dir, { recursive: true });
  const d = daemon(node.ns, nodeDaemonArgv(s, node), f.log);
  if (s.backend === 'macvlan') {
    await until(`the CNI server on ${node.name}`, () => socketAnswers(f.cniSocket), { timeoutMs: 20_000, log: f.log, signal, daemon: d });
    return underlayPods(node);
  }
  // A slow start is not a failed one (an agent that fails exits, and `until` stops at once): a
  // 100-node lab starting on two busy cores has taken more than 20 s for one agent.
  await until(`the agent on ${node.name} taking a lease`, async () => existsSync(f.subnetFile) && (await socketAnswers(f.cniSocket)), {
    timeoutMs: 60_000,
    log: f.log,
    signal,
    daemon: d,
  });
  return subnetOf(f.subnetFile);
}

/** Whether the node's agent (or CNI server) answers. */
export async function nodeDaemonAnswers(s: LabState, node: NodeState): Promise<boolean> {
  const f = nodeFiles(s, node);
  if (s.backend === 'macvlan') return socketAnswers(f.cniSocket);
  return (await socketAnswers(f.statusSocket)) && (await socketAnswers(f.cniSocket));
}
