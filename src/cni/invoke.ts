import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { collect } from '../util/proc.js';
import { Code, CniError, type Command } from './spec.js';

/** The plugin binary named `type` on CNI_PATH, as libcni's FindInPath looks it up. */
export function findPlugin(type: string, path: string[]): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(type)) throw new CniError(Code.InvalidConfig, `plugin type "${type}" is not a valid plugin name`);
  for (const dir of path) {
    const file = join(dir, type);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  throw new CniError(
    Code.InvalidConfig,
    `plugin "${type}" was not found on CNI_PATH (${path.join(':') || 'empty'})`,
    `install it into one of those directories, or fix the plugin type`,
  );
}

export interface InvokeEnv {
  command: Command;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  path: string[];
  /** A command the plugin runs under, e.g. nsenter into the node namespace a runtime would run it in. */
  wrap?: string[];
}

export function cniEnv(e: InvokeEnv): Record<string, string> {
  const env: Record<string, string> = { CNI_COMMAND: e.command, CNI_PATH: e.path.join(':') };
  if (e.containerId !== undefined) env.CNI_CONTAINERID = e.containerId;
  if (e.netns !== undefined) env.CNI_NETNS = e.netns;
  if (e.ifname !== undefined) env.CNI_IFNAME = e.ifname;
  if (e.args) env.CNI_ARGS = e.args;
  return env;
}

/**
 * Runs a plugin the way a runtime does: CNI_* in the environment, the config on stdin. Returns its
 * parsed stdout (undefined when it printed nothing); a failure becomes a CniError with its code.
 */
export async function execPlugin(file: string, env: InvokeEnv, config: object): Promise<unknown> {
  const argv = [...(env.wrap ?? []), file];
  const run = await collect(argv, { input: JSON.stringify(config), env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...cniEnv(env) } }).catch(
    (e: Error) => {
      throw new CniError(Code.IO, e.message);
    },
  );
  const text = run.stdout.trim();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new CniError(Code.Decode, `${file} ${env.command} printed something that is not JSON: ${text.slice(0, 200)}`, run.stderr);
  }
  if (run.code === 0) return parsed;
  const e = (parsed ?? {}) as { code?: number; msg?: string; details?: string };
  const stderr = run.stderr.trim();
  throw new CniError(e.code ?? Code.IO, `${file.split('/').pop()} ${env.command}: ${e.msg ?? (stderr || `exit ${run.code ?? run.signal}`)}`, e.details ?? '');
}

/** The spec versions a plugin says it supports (its VERSION answer). */
export async function pluginVersions(file: string): Promise<string[]> {
  const info = (await execPlugin(file, { command: 'VERSION', path: [] }, { cniVersion: '1.1.0' })) as { supportedVersions?: string[] } | undefined;
  return info?.supportedVersions ?? [];
}
