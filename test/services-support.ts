/**
 * A lab for the Services tests (2 vxlan nodes with real agents, real etcd, pods made through the
 * CNI plugin), with one services-tool process per namespace the tests act from: the Registry in
 * etcd's namespace, probes and held connections in pods, nodes and `outside`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { readStatus } from '../src/agent/status.js';
import { netnsPids } from '../src/kernel/netns.js';
import { nodeFiles, WEFT } from '../src/lab/build.js';
import { down, execIn, readState, up, type LabState, type NodeState } from '../src/lab/lab.js';
import { startNodeDaemon } from '../src/lab/procs.js';
import type { Service } from '../src/service/types.js';
import { collect } from '../src/util/proc.js';
import { waitFor } from '../src/util/wait.js';
import type { Answer, ToolRequest } from './services-tool.js';

const TOOL = fileURLToPath(new URL('./services-tool.js', import.meta.url));
export const OUTSIDE = 'outside';
export const TABLE = 'weft-proxy';

/** A running services-tool. */
class Tool {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly ready: Promise<void>;
  private stderr = '';

  constructor(
    readonly ns: string,
    private readonly child: ChildProcess,
  ) {
    let started: () => void;
    this.ready = new Promise((r) => (started = r));
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.on('exit', (code) => {
      for (const w of this.waiting.values()) w.reject(new Error(`services-tool in ${ns} exited (${code}): ${this.stderr.slice(-400)}`));
      this.waiting.clear();
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { ready?: true; id?: number; result?: unknown; error?: string };
      if (m.ready) started();
      const w = m.id === undefined ? undefined : this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id!);
      if (m.error !== undefined) w.reject(new Error(m.error));
      else w.resolve(m.result);
    });
  }

  static async start(ns: string, args: string[]): Promise<Tool> {
    const t = new Tool(ns, spawn('ip', ['netns', 'exec', ns, process.execPath, TOOL, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
    await waitFor(() => Promise.race([t.ready.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 100))]), {
      timeoutMs: 30_000,
      what: `services-tool in ${ns} to start`,
    });
    return t;
  }

  request<T>(r: ToolRequest): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, ...r })}\n`);
    });
  }

  stop(): void {
    this.child.stdin!.end();
    this.child.kill('SIGKILL');
  }
}

export type Where = string;

export class ServicesLab {
  private readonly tools = new Map<string, Promise<Tool>>();

  private constructor(public s: LabState) {}

  static async up(name: string, nodes = 2, podsPerNode = 2): Promise<ServicesLab> {
    const s = await up({ name, nodes, podsPerNode, backend: 'vxlan', progress: () => undefined });
    return new ServicesLab(s);
  }

  get name(): string {
    return this.s.name;
  }

  refresh(): LabState {
    this.s = readState(this.s.name);
    return this.s;
  }

  node(name: string): NodeState {
    const n = this.s.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in lab ${this.s.name}`);
    return n;
  }

  pod(name: string) {
    const p = this.s.pods.find((x) => x.name === name);
    if (!p) throw new Error(`no pod ${name} in lab ${this.s.name}`);
    return p;
  }

  /** The namespace of a pod, a node, or `outside`. */
  nsOf(where: Where): string {
    if (where === OUTSIDE) return this.s.outside.ns;
    return this.s.nodes.find((n) => n.name === where)?.ns ?? this.pod(where).ns;
  }

  private tool(key: string, ns: string, args: string[]): Promise<Tool> {
    let t = this.tools.get(key);
    if (!t) {
      t = Tool.start(ns, args);
      this.tools.set(key, t);
    }
    return t;
  }

  private async registry(): Promise<Tool> {
    return this.tool('registry', this.s.etcd.ns, ['registry', this.s.etcd.endpoint]);
  }

  async client(where: Where): Promise<Tool> {
    return this.tool(`client:${where}`, this.nsOf(where), ['client']);
  }

  /** Kubernetes documents (Service, EndpointSlice) through Registry.applyManifests. */
  async apply(...docs: object[]): Promise<unknown> {
    return (await this.registry()).request({ op: 'apply', docs });
  }

  /** Any Registry method, e.g. call('labelPod', 'default', 'pod-1a', { app: 'web' }). */
  async call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    return (await this.registry()).request<T>({ op: 'call', method, args });
  }

  async service(name: string, namespace = 'default'): Promise<Service> {
    const svc = await this.call<Service | undefined>('getService', namespace, name);
    if (!svc) throw new Error(`no Service ${namespace}/${name}`);
    return svc;
  }

  async label(pod: string, changes: Record<string, string | null>): Promise<void> {
    await this.call('labelPod', 'default', pod, changes);
  }

  async probe(
    from: Where,
    proto: 'tcp' | 'udp',
    host: string,
    port: number,
    o: { count?: number; timeoutMs?: number; srcPort?: number } = {},
  ): Promise<Answer[]> {
    return (await this.client(from)).request<Answer[]>({ op: 'probe', proto, host, port, ...o });
  }

  /** Which pods answered `count` probes (a failure counts as `!error code`). */
  async answeredBy(from: Where, proto: 'tcp' | 'udp', host: string, port: number, count = 12): Promise<Set<string>> {
    const out = new Set<string>();
    for (const a of await this.probe(from, proto, host, port, { count })) out.add(a.ok ? a.seen.pod : `!${a.code ?? a.error}`);
    return out;
  }

  /** Waits until `count` probes are answered by exactly the pods in `want` (order free). */
  async until(from: Where, proto: 'tcp' | 'udp', host: string, port: number, want: string[], timeoutMs = 30_000): Promise<void> {
    const key = [...want].sort().join(',');
    let last = '';
    await waitFor(
      async () => {
        last = [...(await this.answeredBy(from, proto, host, port, Math.max(8, want.length * 6)))].sort().join(',');
        return last === key;
      },
      { timeoutMs, intervalMs: 200, what: `${proto} ${host}:${port} from ${from} answered by [${key}]` },
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}; last answered by [${last}]\n${await this.proxyReport()}`);
    });
  }

  async open(from: Where, conn: string, host: string, port: number): Promise<Answer> {
    return (await this.client(from)).request<Answer>({ op: 'open', conn, host, port });
  }

  async again(from: Where, conn: string): Promise<Answer> {
    return (await this.client(from)).request<Answer>({ op: 'again', conn });
  }

  async close(from: Where, conn: string): Promise<void> {
    await (await this.client(from)).request({ op: 'close', conn });
  }

  /** A command in a node's namespace; throws with its stderr on failure. */
  async inNode(node: string, argv: string[]): Promise<string> {
    return (await execIn(this.node(node).ns, argv)).stdout;
  }

  async nft(node: string, ...args: string[]): Promise<string> {
    return this.inNode(node, ['nft', ...args]);
  }

  /** `nft list ruleset` in the node's namespace, split into its tables (name → text). */
  async tables(node: string, ...flags: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const block of (await this.nft(node, ...flags, 'list', 'ruleset')).split(/\n(?=table )/)) {
      const name = /^table ip (\S+) \{/.exec(block.trim())?.[1];
      if (name) out.set(name, block);
    }
    return out;
  }

  /** The proxy's table holding Service `svc`'s chains on `node` (the proxy may shard Services over several). */
  async tableOf(node: string, svc: string): Promise<string> {
    for (const [name, text] of await this.tables(node)) if (name.startsWith(TABLE) && text.includes(`-default/${svc}/`)) return name;
    throw new Error(`no ${TABLE} table on ${node} holds Service ${svc}`);
  }

  /** Each agent's proxy status and the end of its log, for a failure message. */
  async proxyReport(): Promise<string> {
    const out: string[] = [];
    for (const n of this.s.nodes) {
      const status = await this.agentStatus(n.name).then(
        (st) => JSON.stringify(st.services),
        (e: Error) => e.message,
      );
      let log: string;
      try {
        log = this.agentLog(n.name).trim().split('\n').slice(-15).join('\n  ');
      } catch (e) {
        log = (e as Error).message;
      }
      out.push(`${n.name} proxy: ${status}\n  ${log}`);
    }
    return out.join('\n');
  }

  async agentStatus(node: string) {
    return (await readStatus(nodeFiles(this.s, this.node(node)).dir)).status;
  }

  agentLog(node: string): string {
    return readFileSync(nodeFiles(this.s, this.node(node)).log, 'utf8');
  }

  /** The agent's pid in the node's namespace (not the tools the tests run there). */
  async agentPid(node: string): Promise<number | undefined> {
    for (const pid of await netnsPids(this.node(node).ns)) {
      let cmd: string;
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      if (cmd.includes(WEFT) && cmd.includes('\0agent\0')) return pid;
    }
    return undefined;
  }

  /** SIGTERM to the node's agent; resolves once it has exited. */
  async stopAgent(node: string): Promise<void> {
    const pid = await this.agentPid(node);
    if (pid === undefined) throw new Error(`no agent runs on ${node}`);
    process.kill(pid, 'SIGTERM');
    await waitFor(async () => (await this.agentPid(node)) === undefined, { timeoutMs: 20_000, what: `the agent on ${node} to exit` });
  }

  /** Starts the node's agent again as the lab does; resolves once it serves CNI. */
  async startAgent(node: string): Promise<void> {
    await startNodeDaemon(this.s, this.node(node));
  }

  /** `weft agent --cleanup` in the node's namespace, as an operator would run it. */
  async cleanupAgent(node: string): Promise<{ code: number | null; out: string }> {
    const n = this.node(node);
    const r = await collect(
      ['ip', 'netns', 'exec', n.ns, process.execPath, WEFT, 'agent', '--cleanup', '--node', node, '--subnet-file', nodeFiles(this.s, n).subnetFile],
      { timeoutMs: 60_000 },
    );
    return { code: r.code, out: `${r.stdout}${r.stderr}` };
  }

  async down(): Promise<void> {
    for (const t of this.tools.values()) (await t.catch(() => undefined))?.stop();
    this.tools.clear();
    await down(this.s.name);
  }
}

/** A Service over TCP and UDP port 80 (the lab workload's) in `default`, selecting pods labelled `<name>=on`. */
export function serviceDoc(name: string, spec: Record<string, unknown>, extra: { ports?: object[] } = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: {
      selector: { [name]: 'on' },
      ports: extra.ports ?? [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 80 },
        { name: 'udp', protocol: 'UDP', port: 80, targetPort: 80 },
      ],
      ...spec,
    },
  };
}

export const failed = (answers: Answer[]) => answers.filter((a) => !a.ok);
export const pods = (answers: Answer[]) => answers.map((a) => (a.ok ? a.seen.pod : `!${a.code}`));
