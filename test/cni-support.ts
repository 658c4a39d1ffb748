/**
 * Shared set-up for the CNI integration tests: a Topology whose "host" namespace plays the node, the
 * weft plugins installed into a temp bin dir, and helpers that exec a plugin inside the host the way
 * a runtime does (CNI_* variables, config on stdin) and read back what it changed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installPlugins } from '../src/cni/install.js';
import type { Interface, IPConfig, Result } from '../src/cni/spec.js';
import { links, addrs, routes, type Link, type LinkAddrs, type Route } from './ipj.js';
import { waitFor as poll } from '../src/util/wait.js';
import { Topology, type ExecResult } from '../src/topo/topology.js';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const WEFT = join(ROOT, 'bin', 'weft');
export const REF = '/usr/lib/cni';

export interface CniCall {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  /** Overrides the lab's CNI_PATH. */
  path?: string;
}

export interface PluginRun extends ExecResult {
  /** stdout parsed as JSON, or undefined when it printed nothing. */
  json: unknown;
}

/** A result as a plugin prints it, in any version: before 1.0.0 each IP also names its version. */
export interface CniResult extends Result {
  ips: (IPConfig & { version?: string })[];
}

export interface ErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export class CniLab {
  readonly binDir: string;
  readonly cniPath: string;
  readonly dataDir: string;
  readonly cacheDir: string;
  readonly hostPath: string;
  private server: ChildProcess | undefined;
  /** What `weft cni serve` logged: one line per request it handled. */
  serverLog = '';
  private pods = 0;

  private constructor(readonly topo: Topology) {
    this.binDir = join(topo.dir, 'bin');
    this.cniPath = `${this.binDir}:${REF}`;
    this.dataDir = join(topo.dir, 'networks');
    this.cacheDir = join(topo.dir, 'cache');
    this.hostPath = topo.path('host');
  }

  static async create(): Promise<CniLab> {
    const topo = await Topology.create();
    try {
      const lab = new CniLab(topo);
      await topo.netns('host');
      installPlugins(lab.binDir);
      mkdirSync(lab.dataDir, { recursive: true });
      return lab;
    } catch (e) {
      await topo.destroy();
      throw e;
    }
  }

  get dir(): string {
    return this.topo.dir;
  }

  /** A new pod namespace; returns its short name and path. */
  async pod(short = `p${++this.pods}`): Promise<{ name: string; path: string }> {
    return { name: short, path: await this.topo.netns(short) };
  }

  /** The weft plugin (or `name` from the bin dir, or a path) run inside the host namespace. */
  plugin(name: string, call: CniCall, conf: object | string, extraEnv: Record<string, string> = {}): Promise<PluginRun> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_PATH: call.path ?? this.cniPath,
      CNI_COMMAND: call.command,
      ...extraEnv,
    };
    if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
    if (call.netns !== undefined) env.CNI_NETNS = call.netns;
    if (call.ifname !== undefined) env.CNI_IFNAME = call.ifname;
    if (call.args !== undefined) env.CNI_ARGS = call.args;
    return this.rawPlugin(name, env, typeof conf === 'string' ? conf : JSON.stringify(conf));
  }

  /** A plugin run with exactly `env` (for bad-environment tests). */
  async rawPlugin(name: string, env: Record<string, string>, stdin: string): Promise<PluginRun> {
    const file = name.includes('/') ? name : join(name.startsWith('weft') ? this.binDir : REF, name);
    // A guard against a hung plugin, not a speed check: 100 plugins started at once on two busy cores
    // take minutes. Longer than the front's own 120 s answer timeout, so its error is what shows.
    const res = await this.topo.exec('host', [file], { env, input: stdin, timeoutMs: 150_000 });
    let json: unknown;
    const text = res.stdout.trim();
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        assert.fail(`${name} ${env.CNI_COMMAND} printed something that is not JSON: ${res.stdout}\nstderr: ${res.stderr}`);
      }
    }
    return { ...res, json };
  }

  /** Runs and asserts success; returns what it printed, parsed (parseResult reads an ADD's). */
  async ok(name: string, call: CniCall, conf: object | string): Promise<unknown> {
    const r = await this.plugin(name, call, conf);
    assert.equal(r.code, 0, `${name} ${call.command} ${call.containerId ?? ''} failed: ${r.stdout}${r.stderr}`);
    return r.json;
  }

  /** Runs and asserts the spec's error JSON with `code` and a non-zero exit. */
  async fails(name: string, call: CniCall, conf: object | string, code: number, msg?: RegExp): Promise<ErrorJson> {
    const r = await this.plugin(name, call, conf);
    return expectError(r, code, msg, `${name} ${call.command}`);
  }

  /** `weft <args>` (the CLI) inside the host namespace. */
  weft(args: string[], env: Record<string, string> = {}): Promise<ExecResult> {
    return this.topo.exec('host', [process.execPath, WEFT, ...args], { env: { ...process.env, ...env }, timeoutMs: 60_000 });
  }

  /** Writes a conflist (or plugin config) into the lab dir and returns its path. */
  writeConf(name: string, conf: object): string {
    const file = join(this.dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(conf, null, 2));
    return file;
  }

  /** Starts `weft cni serve` in the host namespace; resolves once it listens. */
  async serve(socket = join(this.dir, 'cni.sock')): Promise<string> {
    const child = this.topo.spawn('host', [process.execPath, WEFT, 'cni', 'serve', '--socket', socket]);
    this.server = child;
    child.stdout!.on('data', (d: Buffer) => (this.serverLog += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.serverLog += d.toString()));
    const deadline = Date.now() + 15_000;
    while (!this.serverLog.includes('listening on')) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`weft cni serve exited: ${this.serverLog}`);
      if (Date.now() > deadline) throw new Error(`weft cni serve did not start: ${this.serverLog}`);
      await sleep(10);
    }
    return socket;
  }

  get serverPid(): number | undefined {
    return this.server?.pid;
  }

  async hostLinks(): Promise<Link[]> {
    return links(this.hostPath);
  }

  async hostLinkNames(): Promise<string[]> {
    return (await this.hostLinks()).map((l) => l.ifname).sort();
  }

  async hostVeths(): Promise<Link[]> {
    return (await this.hostLinks()).filter((l) => l.linkinfo?.info_kind === 'veth');
  }

  podAddrs(podPath: string, dev?: string): Promise<LinkAddrs[]> {
    return addrs(podPath, dev);
  }

  podRoutes(podPath: string): Promise<Route[]> {
    return routes(podPath);
  }

  /** The host namespace's nftables ruleset, as text. */
  async nftRuleset(): Promise<string> {
    const r = await this.topo.exec('host', ['nft', 'list', 'ruleset']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  /** The addresses in weft's masquerade set in the host (none when the table does not exist). */
  async masqAddrs(): Promise<string[]> {
    const r = await this.topo.exec('host', ['nft', '-j', 'list', 'set', 'ip', 'weft-cni', 'masq_src']);
    if (r.code !== 0) return [];
    const set = (JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables.find((o) => o.set)?.set;
    return (set?.elem ?? []).map(String).sort();
  }

  /** The handles of the rules in weft's masquerade chain (none when the chain does not exist). */
  async masqRuleHandles(): Promise<number[]> {
    const r = await this.topo.exec('host', ['nft', '-j', '-a', 'list', 'chain', 'ip', 'weft-cni', 'postrouting']);
    if (r.code !== 0) return [];
    return (JSON.parse(r.stdout) as { nftables: { rule?: { handle: number } }[] }).nftables.flatMap((o) => (o.rule ? [o.rule.handle] : []));
  }

  /** Everything a CNI call may change in the host: links (with masters, aliases, addresses) and nftables. */
  async hostState(): Promise<{ links: string[]; addrs: string[]; nft: string }> {
    const ls = (await this.hostLinks())
      .map((l) => `${l.ifname} ${l.linkinfo?.info_kind ?? ''} ${l.master ?? ''} ${l.ifalias ?? ''} ${l.flags.includes('UP') ? 'up' : 'down'}`)
      .sort();
    // IPv6 link-local addresses come and go on their own as links come up: not a CNI change.
    const as = (await addrs(this.hostPath))
      .flatMap((l) => l.addr_info.filter((a) => !a.local.startsWith('fe80:')).map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`))
      .sort();
    return { links: ls, addrs: as, nft: await this.nftRuleset() };
  }

  async destroy(): Promise<void> {
    await this.topo.destroy();
  }
}

export function expectError(r: PluginRun, code: number, msg: RegExp | undefined, what: string): ErrorJson {
  assert.notEqual(r.code, 0, `${what} should fail, but exited 0 with ${r.stdout}`);
  assert.ok(r.json, `${what}: no error JSON on stdout (stderr: ${r.stderr})`);
  const e = r.json as ErrorJson;
  assert.equal(typeof e.cniVersion, 'string', `${what}: error has no cniVersion: ${r.stdout}`);
  assert.equal(typeof e.msg, 'string', `${what}: error has no msg: ${r.stdout}`);
  assert.ok(e.msg.length > 0);
  assert.equal(e.code, code, `${what}: expected code ${code}, got ${r.stdout}`);
  if (msg) assert.match(e.msg, msg);
  return e;
}

/** A plugin's printed JSON as a result: asserts the parts the tests read (cniVersion, ips, interface names). */
export function parseResult(json: unknown): CniResult {
  const text = JSON.stringify(json);
  assert.ok(typeof json === 'object' && json !== null && !Array.isArray(json), `not a CNI result: ${text}`);
  const r = json as Record<string, unknown>;
  assert.equal(typeof r.cniVersion, 'string', `a result without cniVersion: ${text}`);
  const entries = (v: unknown, key: string) =>
    Array.isArray(v) && v.every((x: unknown) => typeof x === 'object' && x !== null && typeof (x as Record<string, unknown>)[key] === 'string');
  assert.ok(entries(r.ips, 'address'), `a result without ips[].address: ${text}`);
  assert.ok(r.interfaces === undefined || entries(r.interfaces, 'name'), `a result with interfaces but no interfaces[].name: ${text}`);
  return json as CniResult;
}

/** interfaces[i] of a result (a bridge plugin's: 0 the bridge, 1 the host veth, 2 the pod's). */
export function iface(r: CniResult, i: number): Interface {
  const found = r.interfaces?.[i];
  assert.ok(found, `the result has no interfaces[${i}]: ${JSON.stringify(r)}`);
  return found;
}

/** The first address of a result, without its prefix length. */
export const ipOf = (r: CniResult): string => r.ips[0]!.address.split('/')[0]!;

/** Reservation files of a host-local layout network dir: ip -> "<id>\r\n<ifname>". */
export function reservations(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(name) || name.includes(':')) out.set(name, readFileSync(join(dir, name), 'utf8'));
  }
  return out;
}

/** util/wait's waitFor for the CNI tests' yes/no checks. */
export const waitFor = (what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<true> =>
  poll(async () => (await fn()) || undefined, { timeoutMs, intervalMs: 25, what });

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
