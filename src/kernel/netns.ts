import { closeSync, existsSync, mkdirSync, openSync, readdirSync, rmSync } from 'node:fs';
import { errnoKind, KernelError } from './errors.js';
import { run } from './exec.js';
import { errno, libc, strerror } from './libc.js';
import { inNewNamespace, SELF_NS } from './socket.js';

export const NETNS_DIR = '/run/netns';

export const netnsPath = (name: string): string => `${NETNS_DIR}/${name}`;

const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_SHARED = 1 << 20;
const EINVAL = 22;

function mountError(what: string, err: number): KernelError {
  return new KernelError(`${what}: ${strerror(err)}`, errnoKind(err), undefined, err);
}

let shared = false;

/**
 * As `ip netns add` first makes sure: NETNS_DIR is a mount point with shared propagation, so that a
 * namespace pinned there shows in every mount namespace (those `ip netns exec` makes too).
 */
function shareNetnsDir(): void {
  if (shared) return;
  mkdirSync(NETNS_DIR, { recursive: true, mode: 0o755 });
  if (libc.mount('none', NETNS_DIR, 'none', MS_SHARED | MS_REC, null) !== 0) {
    const err = errno();
    if (err !== EINVAL) throw mountError(`cannot share ${NETNS_DIR}`, err);
    // Not a mount point yet: bind it onto itself, then share it.
    if (libc.mount(NETNS_DIR, NETNS_DIR, 'none', MS_BIND | MS_REC, null) !== 0) throw mountError(`cannot bind ${NETNS_DIR} onto itself`, errno());
    if (libc.mount('none', NETNS_DIR, 'none', MS_SHARED | MS_REC, null) !== 0) throw mountError(`cannot share ${NETNS_DIR}`, errno());
  }
  shared = true;
}

/**
 * Creates a named namespace with its loopback up, as `ip netns add` does (a new namespace
 * bind-mounted on /run/netns/<name>) but in this process: a lab makes a namespace per node, pod and
 * runtime, and on busy cores starting a process costs more than the change itself.
 */
export async function createNetns(name: string): Promise<string> {
  const path = netnsPath(name);
  shareNetnsDir();
  try {
    closeSync(openSync(path, 'wx', 0));
  } catch (e) {
    const err = -((e as NodeJS.ErrnoException).errno ?? 0);
    throw new KernelError(`cannot create namespace file "${path}": ${strerror(err)}`, errnoKind(err), undefined, err);
  }
  try {
    inNewNamespace(() => {
      if (libc.mount(SELF_NS, path, 'none', MS_BIND, null) !== 0) throw mountError(`cannot bind the new namespace on ${path}`, errno());
    });
  } catch (e) {
    rmSync(path, { force: true });
    throw e;
  }
  const [{ apply, Plan }, { setLink }] = await Promise.all([import('./plan.js'), import('./ops.js')]);
  await apply(new Plan().add(setLink({ ns: path, dev: 'lo', up: true })));
  return path;
}

export async function netnsPids(name: string): Promise<number[]> {
  const { stdout } = await run(['ip', 'netns', 'pids', name]).catch(() => ({ stdout: '' }));
  return stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** Signals every process inside the namespace. */
export async function signalNetns(name: string, signal: NodeJS.Signals): Promise<void> {
  for (const pid of await netnsPids(name)) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Kills every process still inside the namespace, then removes it; a missing one is fine. */
export async function deleteNetns(name: string): Promise<void> {
  if (!existsSync(netnsPath(name))) return;
  await signalNetns(name, 'SIGKILL');
  await run(['ip', 'netns', 'del', name]).catch((e: Error) => {
    if (existsSync(netnsPath(name))) throw e;
  });
}

export function listNetns(): string[] {
  return existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : [];
}
