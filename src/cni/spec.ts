/** The CNI specification's data model (SPEC.md 1.1.0) and its older result versions. */

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const LATEST = '1.1.0';

/** Well-known error codes (SPEC.md, "Error"). 100 and up are ours. */
export const Code = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  IO: 5,
  Decode: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  NotAvailableLimited: 51,
  /** CNI_IFNAME already exists in the container. */
  InterfaceExists: 100,
  /** The IP range has no free address. */
  RangeFull: 101,
  /** A kernel change failed; the message has the command and its error. */
  Kernel: 102,
  /** The delegated IPAM plugin failed. */
  Ipam: 103,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }

  toJSON(cniVersion: string): object {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';

export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
}

export interface IPConfig {
  address: string;
  gateway?: string;
  interface?: number;
}

export interface RouteEntry {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface DNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A result in the current (1.x) shape; older versions are produced by `encodeResult`. */
export interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IPConfig[];
  routes?: RouteEntry[];
  dns?: DNS;
}

export interface Attachment {
  containerID: string;
  ifname: string;
}

export interface Env {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  args: Map<string, string>;
  path: string[];
}

const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'];
const NEEDS_CONTAINER: readonly Command[] = ['ADD', 'DEL', 'CHECK'];

/** Reads and validates the CNI_* variables the way libcni's skel does; errors are code 4. */
export function parseEnv(env: NodeJS.ProcessEnv): Env {
  const command = env.CNI_COMMAND ?? '';
  if (!COMMANDS.includes(command as Command)) {
    throw new CniError(Code.InvalidEnv, `CNI_COMMAND is ${command ? `"${command}"` : 'not set'}`, `set it to one of ${COMMANDS.join(', ')}`);
  }
  const cmd = command as Command;
  const containerId = env.CNI_CONTAINERID ?? '';
  const netns = env.CNI_NETNS ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  if (NEEDS_CONTAINER.includes(cmd)) {
    if (!containerId) throw new CniError(Code.InvalidEnv, 'CNI_CONTAINERID is not set', `${cmd} needs the container's ID`);
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(containerId)) {
      throw new CniError(Code.InvalidEnv, `CNI_CONTAINERID "${containerId}" is invalid`, 'it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$');
    }
    validateIfname(ifname);
    if (cmd !== 'DEL' && !netns) throw new CniError(Code.InvalidEnv, 'CNI_NETNS is not set', `${cmd} needs the path of the container's network namespace`);
  }
  const path = (env.CNI_PATH ?? '').split(':').filter(Boolean);
  if (cmd !== 'VERSION' && cmd !== 'STATUS' && env.CNI_PATH === undefined) {
    throw new CniError(Code.InvalidEnv, 'CNI_PATH is not set', 'set it to the directories that hold the CNI plugins, separated by ":"');
  }
  return { command: cmd, containerId, netns, ifname, args: parseArgs(env.CNI_ARGS ?? ''), path };
}

export function validateIfname(ifname: string): void {
  if (!ifname) throw new CniError(Code.InvalidEnv, 'CNI_IFNAME is not set', 'name the interface to create in the container, e.g. eth0');
  const bad =
    Buffer.byteLength(ifname) > 15
      ? 'is longer than 15 bytes'
      : ifname === '.' || ifname === '..'
        ? 'is "." or ".."'
        : /[/:\s\u0085]/.test(ifname)
          ? 'contains "/", ":" or whitespace'
          : undefined;
  if (bad) throw new CniError(Code.InvalidEnv, `CNI_IFNAME "${ifname}" ${bad}`, 'use 1-15 bytes without "/", ":" or whitespace');
}

function parseArgs(text: string): Map<string, string> {
  const args = new Map<string, string>();
  for (const pair of text.split(';').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(Code.InvalidEnv, `CNI_ARGS has "${pair}", which is not KEY=VALUE`, 'CNI_ARGS is KEY=VALUE pairs separated by ";"');
    args.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return args;
}

export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  ipam?: { type?: string; [k: string]: unknown };
  prevResult?: unknown;
  runtimeConfig?: Record<string, unknown>;
  [k: string]: unknown;
}

/** Parses a plugin's stdin: JSON (code 6), a supported version (code 1), a valid name (code 7). */
export function parseNetConf(text: string, command: Command): NetConf {
  let conf: unknown;
  try {
    conf = JSON.parse(text);
  } catch (e) {
    throw new CniError(
      Code.Decode,
      `the network configuration on stdin is not valid JSON: ${(e as Error).message}`,
      'pass the plugin config as a JSON object on stdin',
    );
  }
  if (typeof conf !== 'object' || conf === null || Array.isArray(conf)) {
    throw new CniError(Code.Decode, 'the network configuration on stdin is not a JSON object');
  }
  const c = conf as Record<string, unknown>;
  const version = c.cniVersion;
  if (typeof version !== 'string' || version === '') {
    throw new CniError(Code.InvalidConfig, 'cniVersion is missing', `set "cniVersion" to one of ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  checkVersion(version, command);
  if (command === 'VERSION') return c as NetConf;
  if (typeof c.name !== 'string' || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(c.name)) {
    throw new CniError(Code.InvalidConfig, `network name ${JSON.stringify(c.name)} is invalid`, 'set "name" to match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$');
  }
  if (c.ipam !== undefined && (typeof c.ipam !== 'object' || c.ipam === null || Array.isArray(c.ipam))) {
    throw new CniError(Code.InvalidConfig, '"ipam" must be an object');
  }
  return c as NetConf;
}

export function checkVersion(version: string, command: Command): void {
  if (command === 'VERSION') return;
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(Code.IncompatibleVersion, `incompatible CNI version ${version}`, `this plugin supports ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  if (command === 'CHECK' && versionLess(version, '0.4.0')) {
    throw new CniError(Code.IncompatibleVersion, `CHECK needs cniVersion 0.4.0 or later, the config says ${version}`);
  }
  if ((command === 'GC' || command === 'STATUS') && versionLess(version, '1.1.0')) {
    throw new CniError(Code.IncompatibleVersion, `${command} needs cniVersion 1.1.0 or later, the config says ${version}`);
  }
}

export function versionLess(a: string, b: string): boolean {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) < (pb[i] ?? 0);
  }
  return false;
}

/** Reads a result in any supported version into the current shape. */
export function decodeResult(raw: unknown): Result {
  if (raw === undefined || raw === null) return { cniVersion: LATEST };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new CniError(Code.Decode, 'prevResult is not a JSON object');
  const r = raw as Record<string, unknown>;
  const ips = Array.isArray(r.ips)
    ? (r.ips as Record<string, unknown>[]).map((ip) => {
        const out: IPConfig = { address: String(ip.address) };
        if (typeof ip.gateway === 'string') out.gateway = ip.gateway;
        if (typeof ip.interface === 'number') out.interface = ip.interface;
        return out;
      })
    : undefined;
  const result: Result = { cniVersion: typeof r.cniVersion === 'string' ? r.cniVersion : LATEST };
  if (Array.isArray(r.interfaces)) result.interfaces = r.interfaces as Interface[];
  if (ips) result.ips = ips;
  if (Array.isArray(r.routes)) result.routes = r.routes as RouteEntry[];
  if (r.dns && typeof r.dns === 'object') result.dns = r.dns;
  return result;
}

/**
 * Writes a result in the requested version: 0.3.x and 0.4.0 carry ips[].version and only dst/gw in
 * routes; 1.0.0 dropped ips[].version; 1.1.0 added route mtu/advmss/priority/table/scope.
 */
export function encodeResult(result: Result, version: string): object {
  const old = versionLess(version, '1.0.0');
  const ips = (result.ips ?? []).map((ip) => (old ? { version: ip.address.includes(':') ? '6' : '4', ...ip } : ip));
  const routes = (result.routes ?? []).map((r) => (versionLess(version, '1.1.0') ? (r.gw ? { dst: r.dst, gw: r.gw } : { dst: r.dst }) : r));
  const out: Record<string, unknown> = { cniVersion: version };
  if (result.interfaces?.length) {
    out.interfaces = versionLess(version, '1.1.0') ? result.interfaces.map(({ mtu: _mtu, ...i }) => i) : result.interfaces;
  }
  out.ips = ips;
  if (routes.length) out.routes = routes;
  out.dns = result.dns ?? {};
  return out;
}

/** The attachments a GC must keep: cni.dev/valid-attachments, or the older cni.dev/attachments. */
export function validAttachments(conf: NetConf): Attachment[] {
  const list = conf['cni.dev/valid-attachments'] ?? conf['cni.dev/attachments'];
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new CniError(Code.InvalidConfig, 'cni.dev/valid-attachments must be a list of {containerID, ifname}');
  return list.map((a: { containerID?: unknown; ifname?: unknown }) => ({ containerID: String(a.containerID), ifname: String(a.ifname) }));
}
