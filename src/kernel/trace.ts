import { spawn } from 'node:child_process';
import { collect } from '../util/proc.js';
import { IPPROTO, listEntries, type CtEntry } from './conntrack.js';

/**
 * What `weft trace` reads from the kernel in a namespace (read only): nftables trace events
 * (`nft -a monitor`) and a route lookup for one packet (`ip -j route get`), each through its tool,
 * and conntrack entries (over netlink). The trace's own nft tables are ops like any other change.
 */
const inNs = (ns: string, argv: string[]) => ['nsenter', `--net=${ns}`, ...argv];

/**
 * `nft -a monitor` in `ns`: besides trace events it prints ruleset changes, so a change of the trace's
 * own table shows that it is subscribed. nft 1.0.6 prints trace events as text even
 * with -j, so the lines are kept as nft prints them (parsed in trace/events.ts).
 */
export class TraceMonitor {
  private readonly lines: string[] = [];
  private readonly child;
  private partial = '';
  private readonly exited: Promise<void>;

  constructor(ns: string) {
    const argv = inNs(ns, ['nft', '-a', 'monitor']);
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d: Buffer) => this.take(d.toString()));
    this.child.stderr.on('data', (d: Buffer) => this.take(d.toString()));
    this.exited = new Promise((resolve) => {
      this.child.on('close', () => resolve());
      this.child.on('error', () => resolve());
    });
  }

  private take(text: string): void {
    const all = this.partial + text;
    const parts = all.split('\n');
    this.partial = parts.pop() ?? '';
    this.lines.push(...parts);
  }

  /** Whether a line containing `text` was printed. */
  has(text: string): boolean {
    return this.lines.some((l) => l.includes(text)) || this.partial.includes(text);
  }

  /** Stops the monitor; returns the trace events it printed (lines starting `trace id`). */
  async stop(): Promise<string[]> {
    this.child.kill('SIGTERM');
    await this.exited;
    if (this.partial) this.lines.push(this.partial);
    return this.lines.filter((l) => l.startsWith('trace id '));
  }
}

/** `ip route get`'s answer: the route the kernel picks for that packet, or the error it gives. */
export interface RouteLookup {
  ok: boolean;
  type?: string;
  dst?: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  flags?: string[];
  error?: string;
}

/** The kernel's routing decision for a packet to `dst` (from `from`, arriving on `iif`) in `ns`. */
export async function routeGet(ns: string, dst: string, o: { from?: string; iif?: string } = {}): Promise<RouteLookup> {
  const args = ['ip', '-j', 'route', 'get', dst, ...(o.from ? ['from', o.from] : []), ...(o.iif ? ['iif', o.iif] : [])];
  const r = await collect(inNs(ns, args), { timeoutMs: 10_000 });
  if (r.code !== 0) return { ok: false, error: r.stderr.trim().replace(/^RTNETLINK answers: /, '') || `exit ${r.code ?? r.signal}` };
  const [first] = JSON.parse(r.stdout) as RouteLookup[];
  return { ...first, ok: true };
}

/** The conntrack entries in `ns` of `proto` from source port `sport` (as `conntrack -L -p PROTO --orig-port-src SPORT`). */
export async function listFlows(ns: string, proto: keyof typeof IPPROTO, sport: number): Promise<CtEntry[]> {
  return (await listEntries(ns, IPPROTO[proto])).filter((e) => e.orig.sport === sport);
}
