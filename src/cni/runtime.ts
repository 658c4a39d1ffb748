import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/file.js';
import { execPlugin, findPlugin } from './invoke.js';
import { Code, CniError, versionLess, type Attachment } from './spec.js';

/**
 * A container runtime's side of CNI, as libcni does it (and cnitool exposes it): a conflist runs ADD
 * in order with each plugin's result as the next one's prevResult, DEL in reverse, CHECK in order
 * against the cached result, and results are cached per attachment.
 */
export interface NetworkList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
  bytes: string;
}

export interface RuntimeOptions {
  cniPath: string[];
  cacheDir: string;
  containerId: string;
  netns: string;
  ifname: string;
  args?: string;
  capabilityArgs?: Record<string, unknown>;
  /** Runs each plugin under this command (see InvokeEnv.wrap). */
  wrap?: string[];
}

export const DEFAULT_CNI_PATH = ['/opt/cni/bin', '/usr/lib/cni'];
export const DEFAULT_CACHE_DIR = '/var/lib/cni';

export function loadNetworkList(file: string): NetworkList {
  const bytes = readFileSync(file, 'utf8');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(bytes) as Record<string, unknown>;
  } catch (e) {
    throw new CniError(Code.Decode, `${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw.cniVersion !== 'string' || typeof raw.name !== 'string') {
    throw new CniError(Code.InvalidConfig, `${file} needs "cniVersion" and "name"`);
  }
  const plugins = Array.isArray(raw.plugins) ? (raw.plugins as Record<string, unknown>[]) : [raw];
  if (plugins.length === 0 || plugins.some((p) => typeof p.type !== 'string')) {
    throw new CniError(Code.InvalidConfig, `${file}: every plugin needs a "type"`);
  }
  return { cniVersion: raw.cniVersion, name: raw.name, plugins, bytes };
}

/** A stable container ID for a namespace, as cnitool derives one. */
export function containerIdFor(netns: string): string {
  return `weft-${createHash('sha256').update(netns).digest('hex').slice(0, 20)}`;
}

/** Injects what libcni injects: name, version, the declared capabilities' runtimeConfig, prevResult. */
function pluginConfig(list: NetworkList, plugin: Record<string, unknown>, o: RuntimeOptions, prevResult: unknown): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  const caps = (plugin.capabilities ?? {}) as Record<string, boolean>;
  const runtimeConfig = Object.fromEntries(Object.entries(o.capabilityArgs ?? {}).filter(([k]) => caps[k]));
  if (Object.keys(runtimeConfig).length) conf.runtimeConfig = runtimeConfig;
  else delete conf.runtimeConfig;
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return conf;
}

const cacheFile = (o: RuntimeOptions, network: string) => join(o.cacheDir, 'results', `${network}-${o.containerId}-${o.ifname}`);

function env(o: RuntimeOptions, command: 'ADD' | 'DEL' | 'CHECK') {
  return { command, containerId: o.containerId, netns: o.netns, ifname: o.ifname, args: o.args ?? '', path: o.cniPath, ...(o.wrap ? { wrap: o.wrap } : {}) };
}

function readCache(o: RuntimeOptions, network: string): { result?: unknown } | undefined {
  try {
    return JSON.parse(readFileSync(cacheFile(o, network), 'utf8')) as { result?: unknown };
  } catch {
    return undefined;
  }
}

/** ADD: plugins in order. Like libcni it does not tear down after a failure; that is the caller's DEL. */
export async function addNetworkList(list: NetworkList, o: RuntimeOptions): Promise<unknown> {
  let result: unknown;
  for (const plugin of list.plugins) {
    result = await execPlugin(findPlugin(String(plugin.type), o.cniPath), env(o, 'ADD'), pluginConfig(list, plugin, o, result));
  }
  const file = cacheFile(o, list.name);
  mkdirSync(join(o.cacheDir, 'results'), { recursive: true });
  const entry = {
    kind: 'cniCacheV1',
    containerId: o.containerId,
    config: Buffer.from(list.bytes).toString('base64'),
    ifName: o.ifname,
    networkName: list.name,
    netns: o.netns,
    cniArgs: o.args ? o.args.split(';').map((kv) => kv.split('=')) : [],
    capabilityArgs: o.capabilityArgs ?? {},
    result,
  };
  // Atomic, not fsynced: the namespace it describes does not outlive a crash of the machine, and two
  // fsyncs per ADD held a runtime making many pods at once (lab up).
  writeFileAtomic(file, JSON.stringify(entry), { durable: false });
  return result;
}

/** DEL: plugins in reverse order with the cached result; the cache entry goes last. */
export async function delNetworkList(list: NetworkList, o: RuntimeOptions): Promise<void> {
  const cached = readCache(o, list.name)?.result;
  for (const plugin of [...list.plugins].reverse()) {
    await execPlugin(findPlugin(String(plugin.type), o.cniPath), env(o, 'DEL'), pluginConfig(list, plugin, o, cached));
  }
  rmSync(cacheFile(o, list.name), { force: true });
}

export async function checkNetworkList(list: NetworkList, o: RuntimeOptions): Promise<void> {
  if (versionLess(list.cniVersion, '0.4.0'))
    throw new CniError(Code.IncompatibleVersion, `CHECK needs cniVersion 0.4.0 or later, ${list.name} is ${list.cniVersion}`);
  const cached = readCache(o, list.name);
  if (!cached) throw new CniError(Code.UnknownContainer, `no cached result for ${o.containerId}/${o.ifname} in ${list.name}`, 'ADD it first');
  for (const plugin of list.plugins) {
    await execPlugin(findPlugin(String(plugin.type), o.cniPath), env(o, 'CHECK'), pluginConfig(list, plugin, o, cached.result));
  }
}

/** The attachments of `network` this runtime has cached, which GC keeps unless told otherwise. */
export function cachedAttachments(cacheDir: string, network: string): Attachment[] {
  const dir = join(cacheDir, 'results');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: Attachment[] = [];
  for (const name of names) {
    try {
      const c = JSON.parse(readFileSync(join(dir, name), 'utf8')) as { networkName?: string; containerId?: string; ifName?: string };
      if (c.networkName === network && c.containerId && c.ifName) out.push({ containerID: c.containerId, ifname: c.ifName });
    } catch {
      // not a cache entry
    }
  }
  return out;
}

/** GC: each plugin of spec 1.1.0 or later frees what `valid` does not name. */
export async function gcNetworkList(list: NetworkList, cniPath: string[], valid: Attachment[]): Promise<void> {
  if (versionLess(list.cniVersion, '1.1.0'))
    throw new CniError(Code.IncompatibleVersion, `GC needs cniVersion 1.1.0 or later, ${list.name} is ${list.cniVersion}`);
  for (const plugin of list.plugins) {
    const conf = { ...plugin, cniVersion: list.cniVersion, name: list.name, 'cni.dev/valid-attachments': valid };
    await execPlugin(findPlugin(String(plugin.type), cniPath), { command: 'GC', path: cniPath }, conf);
  }
}

export async function statusNetworkList(list: NetworkList, cniPath: string[]): Promise<void> {
  if (versionLess(list.cniVersion, '1.1.0')) return;
  for (const plugin of list.plugins) {
    await execPlugin(
      findPlugin(String(plugin.type), cniPath),
      { command: 'STATUS', path: cniPath },
      { ...plugin, cniVersion: list.cniVersion, name: list.name },
    );
  }
}
