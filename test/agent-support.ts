/**
 * A multi-node cluster for the agent tests, built from real pieces in namespaces of one Topology:
 *
 *   out (203.0.113.1) ─ rt (203.0.113.254 | 198.18.0.1) ─┐
 *   etcd (198.18.0.2, a real etcd) ──────────────────────┼─ ul: bridge br0 ─ nN eth0 198.18.0.(10+N)/24 ─ cni0 ─ pods
 *
 * Each node runs a real `weft agent` process; pods are made by the real CNI plugin (`weft cni add`,
 * run inside the node as a runtime would). The root namespace gets nothing.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentStatus } from '../src/agent/status.js';
import { readStatus } from '../src/agent/status.js';
import { installPlugins } from '../src/cni/install.js';
import { addAddr, addBridge, addRoute, addVeth, setLink, setSysctl } from '../src/kernel/ops.js';
import { apply, Plan } from '../src/kernel/plan.js';
import { startEtcd, type EtcdServer } from '../src/testing/etcd.js';
import { waitFor as poll } from '../src/util/wait.js';
import { Topology, type ExecResult } from '../src/topo/topology.js';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const WEFT = join(ROOT, 'bin', 'weft');
export const TOOL = join(ROOT, 'dist', 'test', 'agent-tool.js');
export const NODE = process.execPath;
export const PREFIX = '/coreos.com/network';
export const OUTSIDE = '203.0.113.1';
export const PORT = 7000;

/** util/wait's waitFor in the argument order the agent tests use. */
export const waitFor = <T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000, every = 100): Promise<T> =>
  poll(check, { timeoutMs, intervalMs: every, what });

export interface AgentProc {
  child: ChildProcess;
  log: string[];
  exited: Promise<number | null>;
}

export interface NodeHandle {
  name: string;
  ip: string;
  dir: string;
  subnetFile: string;
  stateDir: string;
  conflist: string;
  agent?: AgentProc;
}

export interface Pod {
  name: string;
  node: string;
  ip: string;
  server?: ChildProcess;
  received: string[];
}

/** The network config exactly as flannel's documentation writes it (kube-flannel.yml's net-conf.json). */
export const flannelDocConfig = (backend: string): string => `{
  "Network": "10.244.0.0/16",
  "Backend": {
    "Type": "${backend}"
  }
}
`;

export class Cluster {
  readonly nodes = new Map<string, NodeHandle>();
  readonly pods = new Map<string, Pod>();
  etcd!: EtcdServer;
  readonly binDir: string;
  private readonly children: ChildProcess[] = [];
  private readonly procs: ChildProcess[] = [];

  private constructor(
    readonly topo: Topology,
    readonly backend: string,
  ) {
    this.binDir = join(topo.dir, 'bin');
  }

  static async create(backend: string): Promise<Cluster> {
    const topo = await Topology.create();
    const c = new Cluster(topo, backend);
    try {
      await c.underlay();
      installPlugins(c.binDir);
      return c;
    } catch (e) {
      await c.destroy();
      throw e;
    }
  }

  get endpoint(): string {
    return 'http://198.18.0.2:2379';
  }

  /** etcd loses its data: stopped, its data dir deleted, started again empty at the same address. */
  async wipeEtcd(): Promise<void> {
    await this.etcd.stop();
    this.etcd = await startEtcd({ commandPrefix: this.topo.argv('etcd', []), host: '198.18.0.2' });
  }

  private async underlay(): Promise<void> {
    const t = this.topo;
    const [ul, rt, out, etcd] = await Promise.all(['ul', 'rt', 'out', 'etcd'].map((s) => t.netns(s)));
    await apply(new Plan().add(addBridge({ ns: ul, name: 'br0' }), setLink({ ns: ul, dev: 'br0', up: true })));
    await this.attach('rt', '198.18.0.1');
    await this.attach('etcd', '198.18.0.2');
    const q = new Plan().add(
      addVeth({ ns: rt, name: 'eth1', peer: { name: 'eth0', netns: out } }),
      addAddr({ ns: rt, addr: '203.0.113.254/24', dev: 'eth1' }),
      setLink({ ns: rt, dev: 'eth1', up: true }),
      addAddr({ ns: out, addr: `${OUTSIDE}/24`, dev: 'eth0' }),
      setLink({ ns: out, dev: 'eth0', up: true }),
      addRoute({ ns: out, dst: 'default', via: '203.0.113.254' }),
      setSysctl({ ns: rt, key: 'net.ipv4.ip_forward', value: '1' }),
    );
    await apply(q);
    void etcd;
    this.etcd = await startEtcd({ commandPrefix: t.argv('etcd', []), host: '198.18.0.2' });
  }

  /** A veth from namespace `short` (eth0, `ip`/24) to the underlay bridge in namespace `segment`. */
  private async attach(short: string, ip: string, segment = 'ul', gateway = '198.18.0.1'): Promise<void> {
    const t = this.topo;
    const ul = t.path(segment);
    const ns = t.path(short);
    const port = `p-${short}`.slice(0, 15);
    const p = new Plan().add(
      addVeth({ ns: ul, name: port, peer: { name: 'eth0', netns: ns } }),
      setLink({ ns: ul, dev: port, master: 'br0', up: true }),
      addAddr({ ns, addr: `${ip}/24`, dev: 'eth0' }),
      setLink({ ns, dev: 'eth0', up: true }),
    );
    if (short !== 'rt') p.add(addRoute({ ns, dst: 'default', via: gateway }));
    await apply(p);
  }

  exec(short: string, argv: string[], timeoutMs = 20_000): Promise<ExecResult> {
    return this.topo.exec(short, argv, { timeoutMs });
  }

  /** A tool run; the tools bound their own waits (tcp: 3 s), `timeoutMs` only stops a hung one on a loaded machine. */
  async tool(short: string, args: string[], timeoutMs = 30_000): Promise<ExecResult> {
    return this.exec(short, [NODE, TOOL, ...args], timeoutMs);
  }

  async etcdctl(args: string[]): Promise<string> {
    const r = await this.tool('etcd', ['etcd', this.endpoint, PREFIX, ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  }

  async networkInit(config: string): Promise<ExecResult> {
    const file = join(this.topo.dir, 'net-conf.json');
    writeFileSync(file, config);
    return this.exec('etcd', [NODE, WEFT, 'network', 'init', '--config', file, '--etcd-endpoints', this.endpoint]);
  }

  /**
   * A second L2 segment, 198.19.0.0/24, behind the router (198.19.0.1): its nodes reach the others
   * only through the router, which is what host-gw cannot handle.
   */
  private async secondSegment(): Promise<void> {
    if (this.topo.path('ul2') && (await this.exec('ul2', ['true']).catch(() => undefined))?.code === 0) return;
    const t = this.topo;
    const ul2 = await t.netns('ul2');
    const rt = t.path('rt');
    await apply(
      new Plan().add(
        addBridge({ ns: ul2, name: 'br0' }),
        setLink({ ns: ul2, dev: 'br0', up: true }),
        addVeth({ ns: ul2, name: 'p-rt', peer: { name: 'eth2', netns: rt } }),
        setLink({ ns: ul2, dev: 'p-rt', master: 'br0', up: true }),
        addAddr({ ns: rt, addr: '198.19.0.1/24', dev: 'eth2' }),
        setLink({ ns: rt, dev: 'eth2', up: true }),
      ),
    );
  }

  /** A node namespace on the underlay at 198.18.0.(10+index) (198.19.0.x on the second segment), with its CNI config. */
  async addNode(name: string, index: number, segment: 'ul' | 'ul2' = 'ul'): Promise<NodeHandle> {
    if (segment === 'ul2') await this.secondSegment();
    await this.topo.netns(name);
    const ip = `${segment === 'ul' ? '198.18' : '198.19'}.0.${10 + index}`;
    await this.attach(name, ip, segment, segment === 'ul' ? '198.18.0.1' : '198.19.0.1');
    const dir = join(this.topo.dir, name);
    mkdirSync(dir, { recursive: true });
    const node: NodeHandle = {
      name,
      ip,
      dir,
      subnetFile: join(dir, 'subnet.env'),
      stateDir: join(dir, 'state'),
      conflist: join(dir, 'weft.conflist'),
    };
    // subnet.env from the agent, served through the agent's CNI socket; a default route as kube-flannel's conflist gives.
    writeFileSync(
      node.conflist,
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'cbr0',
        plugins: [{ type: 'weft', isDefaultGateway: true, subnetFile: node.subnetFile, dataDir: join(dir, 'ipam'), socket: join(dir, 'cni.sock') }],
      }),
    );
    this.nodes.set(name, node);
    return node;
  }

  node(name: string): NodeHandle {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** `weft agent` with the flags that name the node and where it keeps its lease: shared by a run and `--cleanup`. */
  private agentCommand(node: NodeHandle): string[] {
    return [NODE, WEFT, 'agent', '--node', node.name, '--iface', 'eth0', '--etcd-endpoints', this.endpoint, '--subnet-file', node.subnetFile];
  }

  agentArgs(node: NodeHandle, extra: string[] = []): string[] {
    return [...this.agentCommand(node), '--state-dir', node.stateDir, '--cni-socket', join(node.dir, 'cni.sock'), '--resync', '1', ...extra];
  }

  /** Runs `weft agent --cleanup` in the node, as an operator would after stopping the agent. */
  cleanupAgent(name: string): Promise<ExecResult> {
    return this.exec(name, [...this.agentCommand(this.node(name)), '--cleanup']);
  }

  startAgent(name: string, extra: string[] = []): AgentProc {
    const node = this.node(name);
    const child = this.topo.spawn(name, this.agentArgs(node, extra));
    const log: string[] = [];
    let partial = '';
    const collect = (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      log.push(...lines);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    node.agent = { child, log, exited };
    this.children.push(child);
    return node.agent;
  }

  async stopAgent(name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const a = this.node(name).agent;
    if (!a || a.child.exitCode !== null || a.child.signalCode !== null) return a?.child.exitCode ?? null;
    a.child.kill(signal);
    const timer = setTimeout(() => a.child.kill('SIGKILL'), 10_000);
    const code = await a.exited;
    clearTimeout(timer);
    return code;
  }

  async status(name: string): Promise<AgentStatus> {
    return (await readStatus(this.node(name).stateDir, 3000)).status;
  }

  /** Waits until the agent holds a lease, knows `remotes` other leases and the kernel matches. */
  async waitReady(name: string, remotes: number, timeoutMs = 20_000): Promise<AgentStatus> {
    return waitFor(
      `agent on ${name} ready with ${remotes} remote leases`,
      async () => {
        const a = this.node(name).agent;
        if (a && a.child.exitCode !== null) throw new Error(`agent on ${name} exited ${a.child.exitCode}:\n${a.log.join('\n')}`);
        if (!existsSync(this.node(name).subnetFile)) return undefined;
        const s = await this.status(name);
        return s.ownLease && s.remoteLeases.length === remotes && s.drift.length === 0 ? s : undefined;
      },
      timeoutMs,
      200,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\nagent log:\n${this.node(name).agent?.log.slice(-30).join('\n')}`);
    });
  }

  subnetOf(name: string): string {
    const m = /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(this.node(name).subnetFile, 'utf8'));
    return m![1]!;
  }

  /** A pod namespace wired by `weft cni add` run inside the node; starts the test server in it. */
  async addPod(podName: string, nodeName: string, conflist = this.node(nodeName).conflist): Promise<Pod> {
    const node = this.node(nodeName);
    const nsPath = await this.topo.netns(podName);
    const r = await this.exec(nodeName, [
      NODE,
      WEFT,
      'cni',
      'add',
      '--conf',
      conflist,
      '--cni-path',
      `${this.binDir}:/usr/lib/cni`,
      '--cache-dir',
      join(node.dir, 'cache'),
      nsPath,
    ]);
    assert.equal(r.code, 0, `cni add ${podName} on ${nodeName}: ${r.stdout}${r.stderr}`);
    const result = JSON.parse(r.stdout) as { ips: { address: string }[] };
    const pod: Pod = { name: podName, node: nodeName, ip: result.ips[0]!.address.split('/')[0]!, received: [] };
    this.pods.set(podName, pod);
    await this.serve(pod);
    return pod;
  }

  /** Starts the TCP/UDP server (port 7000) in a pod or node. */
  async serve(target: { name: string; server?: ChildProcess; received: string[] }): Promise<void> {
    const child = this.topo.spawn(target.name, [NODE, TOOL, 'serve', String(PORT)]);
    target.server = child;
    this.procs.push(child);
    let partial = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server in ${target.name} did not start`)), 10_000);
      child.stdout!.on('data', (d: Buffer) => {
        const lines = (partial + d.toString()).split('\n');
        partial = lines.pop()!;
        for (const l of lines) {
          if (l === 'ready') {
            clearTimeout(timer);
            resolve();
          } else target.received.push(l);
        }
      });
    });
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  /** TCP from namespace `from` to `host`: the address the server saw, or throws. */
  async tcp(from: string, host: string, timeoutMs = 30_000): Promise<string> {
    const r = await this.tool(from, ['tcp', host, String(PORT)], timeoutMs);
    if (r.code !== 0) throw new Error(`tcp ${from} → ${host}: ${r.stderr.trim() || `exit ${r.code}`}`);
    return r.stdout.trim().replace(/^from /, '');
  }

  async udp(from: string, host: string): Promise<string> {
    const r = await this.tool(from, ['udp', host, String(PORT)]);
    if (r.code !== 0) throw new Error(`udp ${from} → ${host}: ${r.stderr.trim() || `exit ${r.code}`}`);
    return r.stdout.trim().replace(/^from /, '');
  }

  /** Retries tcp until it answers (routes converge asynchronously). */
  async tcpEventually(from: string, host: string, timeoutMs = 30_000): Promise<string> {
    return waitFor(`tcp ${from} → ${host}`, () => this.tcp(from, host), timeoutMs, 200);
  }

  /** ip/nft/bridge output inside a namespace, for assertions (the tests read; only the agent writes). */
  async show(short: string, argv: string[]): Promise<string> {
    const r = await this.exec(short, argv);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  /** Spawns a long-lived process in a namespace, killed by destroy(). */
  spawn(short: string, argv: string[]): ChildProcess {
    const c = this.topo.spawn(short, argv);
    this.procs.push(c);
    return c;
  }

  logs(): string {
    return [...this.nodes.values()].map((n) => `--- ${n.name}\n${n.agent?.log.slice(-40).join('\n') ?? ''}`).join('\n');
  }

  async destroy(): Promise<void> {
    for (const c of [...this.children, ...this.procs]) c.kill('SIGKILL');
    await this.etcd?.stop().catch(() => undefined);
    await this.topo.destroy();
  }
}
