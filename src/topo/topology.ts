import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, deleteNetns, listNetns, netnsPath } from '../kernel/netns.js';
import { collect } from '../util/proc.js';
import { LAB_ROOT, TOPO_OWNERS as OWNERS } from '../util/paths.js';

/** A run's own namespaces, and those of labs it started under its id (`weft lab up --name <id>[-x]`). */
const NAME = /^(wt[0-9a-f]{8})-|^wl\.(wt[0-9a-f]{8})[.-]/;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

const live = new Set<Topology>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  const sync = () => {
    for (const t of live) t.destroySync();
  };
  process.on('exit', sync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      sync();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}

/**
 * Disposable namespace topologies for tests and benchmarks. Every namespace of a run is named
 * `wt<8 hex>-<name>`, the run's owner pid is recorded in OWNERS, and `destroy` (also on exit and on
 * signals) removes them; `sweep` removes what a crashed run left. The root namespace is never
 * changed: everything, the "host" of a CNI test included, is a namespace of the run.
 */
export class Topology {
  readonly id = `wt${randomBytes(4).toString('hex')}`;
  readonly dir: string;
  private readonly names: string[] = [];
  private readonly children = new Set<ChildProcess>();

  private constructor() {
    this.dir = join(tmpdir(), `weft-${this.id}`);
  }

  static async create(): Promise<Topology> {
    await sweep();
    const t = new Topology();
    mkdirSync(OWNERS, { recursive: true });
    writeFileSync(join(OWNERS, t.id), String(process.pid));
    mkdirSync(t.dir, { recursive: true });
    live.add(t);
    hookExit();
    return t;
  }

  name(short: string): string {
    return `${this.id}-${short}`;
  }

  /** Creates namespace `short` (loopback up) and returns its path. */
  async netns(short: string): Promise<string> {
    const name = this.name(short);
    this.names.push(name);
    return createNetns(name);
  }

  path(short: string): string {
    return netnsPath(this.name(short));
  }

  /** argv run inside namespace `short` (undefined: this process's namespace). */
  argv(short: string | undefined, argv: string[]): string[] {
    return short === undefined ? argv : ['ip', 'netns', 'exec', this.name(short), ...argv];
  }

  /** Runs argv inside namespace `short` to its end (killed after `timeoutMs`, default 60 s). */
  async exec(short: string | undefined, argv: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<ExecResult> {
    const r = await collect(this.argv(short, argv), { ...opts, timeoutMs: opts.timeoutMs ?? 60_000 });
    return { code: r.code ?? 128, stdout: r.stdout, stderr: r.stderr };
  }

  /** A long-running process inside namespace `short`, killed by destroy(). */
  spawn(short: string | undefined, argv: string[], env?: NodeJS.ProcessEnv): ChildProcess {
    const full = this.argv(short, argv);
    const child = spawn(full[0]!, full.slice(1), { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  private owns(ns: string): boolean {
    return ns.startsWith(`${this.id}-`) || ns.startsWith(`wl.${this.id}.`) || ns.startsWith(`wl.${this.id}-`);
  }

  async destroy(): Promise<void> {
    live.delete(this);
    for (const c of this.children) c.kill('SIGKILL');
    for (const name of listNetns().filter((n) => this.owns(n))) await deleteNetns(name);
    rmSync(this.dir, { recursive: true, force: true });
    removeLabDirs(this.id);
    rmSync(join(OWNERS, this.id), { force: true });
  }

  /** For exit handlers, which cannot wait. */
  destroySync(): void {
    for (const c of this.children) c.kill('SIGKILL');
    for (const name of listNetns().filter((n) => this.owns(n))) {
      const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      spawnSync('ip', ['netns', 'del', name]);
    }
    rmSync(this.dir, { recursive: true, force: true });
    removeLabDirs(this.id);
    rmSync(join(OWNERS, this.id), { force: true });
  }
}

function removeLabDirs(id: string): void {
  let labs: string[];
  try {
    labs = readdirSync(LAB_ROOT);
  } catch {
    return;
  }
  for (const lab of labs.filter((l) => l === id || l.startsWith(`${id}-`))) rmSync(join(LAB_ROOT, lab), { recursive: true, force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ownerAlive(id: string): boolean {
  try {
    return alive(Number(readFileSync(join(OWNERS, id), 'utf8')));
  } catch {
    return false;
  }
}

/** Removes the namespaces, temp dirs and owner files of runs whose process is gone. */
export async function sweep(): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of listNetns()) {
    const m = NAME.exec(ns);
    if (m && !ownerAlive((m[1] ?? m[2])!)) {
      await deleteNetns(ns);
      removed.push(ns);
    }
  }
  // Lab pods' resolv.conf files (lab/resolv.ts), whose namespaces are gone with their owner.
  let etcNetns: string[] = [];
  try {
    etcNetns = readdirSync('/etc/netns');
  } catch {
    // none
  }
  for (const ns of etcNetns) {
    const m = NAME.exec(ns);
    if (m && !ownerAlive((m[1] ?? m[2])!)) rmSync(join('/etc/netns', ns), { recursive: true, force: true });
  }
  let owners: string[] = [];
  try {
    owners = readdirSync(OWNERS);
  } catch {
    // nothing recorded yet
  }
  for (const id of owners) {
    if (!ownerAlive(id)) {
      rmSync(join(tmpdir(), `weft-${id}`), { recursive: true, force: true });
      removeLabDirs(id);
      rmSync(join(OWNERS, id), { force: true });
    }
  }
  return removed;
}
