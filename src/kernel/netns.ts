import { existsSync, readdirSync } from 'node:fs';
import { run } from './exec.js';

export const NETNS_DIR = '/run/netns';

export const netnsPath = (name: string): string => `${NETNS_DIR}/${name}`;

/** Creates a named namespace with its loopback up. */
export async function createNetns(name: string): Promise<string> {
  await run(['ip', 'netns', 'add', name]);
  await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  return netnsPath(name);
}

/** Kills every process still inside the namespace, then removes it; a missing one is fine. */
export async function deleteNetns(name: string): Promise<void> {
  if (!existsSync(netnsPath(name))) return;
  const { stdout } = await run(['ip', 'netns', 'pids', name]).catch(() => ({ stdout: '' }));
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await run(['ip', 'netns', 'del', name]).catch((e: Error) => {
    if (existsSync(netnsPath(name))) throw e;
  });
}

export function listNetns(): string[] {
  return existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : [];
}
