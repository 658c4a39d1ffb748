import { existsSync, readdirSync } from 'node:fs';
import { run } from './exec.js';

export const NETNS_DIR = '/run/netns';

export const netnsPath = (name: string): string => `${NETNS_DIR}/${name}`;

/** Creates a named namespace with its loopback up. */
export async function createNetns(name: string): Promise<string> {
  await run(['ip', 'netns', 'add', name]);
  // Over netlink from this process rather than a second `ip`: a lab makes a namespace per node, pod
  // and runtime, and on busy cores each process start costs more than the change itself.
  const [{ apply, Plan }, { setLink }] = await Promise.all([import('./plan.js'), import('./ops.js')]);
  await apply(new Plan().add(setLink({ ns: netnsPath(name), dev: 'lo', up: true })));
  return netnsPath(name);
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
