import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { DatapathStatus, DesiredState } from '../backend/types.js';
import { formatNetwork } from '../ip/cidr.js';
import type { Lease } from '../subnet/lease.js';
import { DNS_DEVICE } from './dns.js';
import type { ServicesStatus } from './services.js';
import { writeFileAtomic } from '../util/file.js';

export const STATUS_SOCKET = 'agent.sock';
export const STATUS_FILE = 'status.json';

export interface LeaseView {
  subnet: string;
  publicIP: string;
  backendType?: string;
  backendData?: unknown;
}

/** What `weft agent status` shows. */
export interface AgentStatus {
  node: string;
  pid: number;
  iface: string;
  publicIP: string;
  backend: string;
  network?: string;
  ownLease?: LeaseView;
  remoteLeases: LeaseView[];
  desired?: DesiredState;
  /** Differences between desired and the kernel when the status was taken; empty when in sync. */
  drift: string[];
  /** The exact commands the next reconcile would run for that drift (a dry run), when read live. */
  plan?: string;
  lastReconcile?: { at: string; changes: string[]; error?: string };
  /** The udp packet loop: attached to its device, and its counters (drops included). */
  datapath?: DatapathStatus;
  /** The service proxy: Services, endpoints and chains programmed, and its last syncs. */
  services?: ServicesStatus;
  /** `reset`: the last time the store was found to have lost its data (or to be another cluster). */
  /** `noQuorum`: etcd's members answer but none has a leader (what the agent's probe saw). */
  store: { healthy: boolean; since: string; noQuorum?: string; reset?: { at: string; reason: string } };
  /** Where the data came from: a live query of the running agent, or its last state file. */
  source?: 'live' | 'file';
  at: string;
}

export const leaseView = (l: Lease): LeaseView => ({
  subnet: formatNetwork(l.subnet),
  publicIP: l.attrs.publicIP,
  ...(l.attrs.backendType !== undefined ? { backendType: l.attrs.backendType } : {}),
  ...(l.attrs.backendData !== undefined ? { backendData: l.attrs.backendData } : {}),
});

/** A unix socket in the state dir: connect, and the agent answers with its live status as JSON. */
export async function serveStatus(stateDir: string, status: () => Promise<AgentStatus>): Promise<Server> {
  const path = join(stateDir, STATUS_SOCKET);
  mkdirSync(stateDir, { recursive: true });
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    status().then(
      (s) => sock.end(`${JSON.stringify(s)}\n`),
      (err: Error) => sock.end(`${JSON.stringify({ error: err.message })}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return server;
}

/** The last status, for `weft agent status` when the agent does not answer. */
export function writeStatusFile(stateDir: string, status: AgentStatus): void {
  mkdirSync(stateDir, { recursive: true });
  // Rewritten after every reconcile and rebuilt on start: atomic for readers, no fsync (two per write
  // blocked the event loop ≈15 ms each under load, delaying the next lease event).
  writeFileAtomic(join(stateDir, STATUS_FILE), `${JSON.stringify(status, null, 2)}\n`, { durable: false });
}

/** Asks the running agent (its socket in the state dir); falls back to its last state file. */
export async function readStatus(stateDir: string, timeoutMs = 5000): Promise<{ status: AgentStatus; note?: string }> {
  try {
    const text = await new Promise<string>((resolve, reject) => {
      const sock = createConnection(join(stateDir, STATUS_SOCKET));
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => sock.destroy(new Error('timed out')), timeoutMs);
      sock.on('data', (d: Buffer) => chunks.push(d));
      sock.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.on('end', () => {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks).toString());
      });
    });
    const parsed = JSON.parse(text) as AgentStatus | { error: string };
    if ('error' in parsed) throw new Error(parsed.error);
    return { status: parsed };
  } catch (err) {
    let text: string;
    try {
      text = readFileSync(join(stateDir, STATUS_FILE), 'utf8');
    } catch {
      throw new Error(`no agent answers in ${stateDir} (${(err as Error).message}) and it holds no ${STATUS_FILE}; is --state-dir the agent's?`);
    }
    const status = JSON.parse(text) as AgentStatus;
    return { status, note: `the agent is not answering (${(err as Error).message}); showing its last state file from ${status.at}` };
  }
}

export function formatStatus(s: AgentStatus, note?: string): string {
  const out: string[] = [];
  if (note) out.push(`note: ${note}`, '');
  out.push(`node ${s.node} (pid ${s.pid}): ${s.publicIP} on ${s.iface}, backend ${s.backend}, network ${s.network ?? '?'}`);
  out.push(
    s.store.noQuorum
      ? `etcd: NO QUORUM since ${s.store.since}: ${s.store.noQuorum}; writes stop (no node joins, no lease or Service changes), pod traffic is unaffected`
      : `etcd: ${s.store.healthy ? 'reachable' : 'UNREACHABLE'} since ${s.store.since}`,
  );
  if (s.store.reset) out.push(`etcd: STORE RESET detected at ${s.store.reset.at} (${s.store.reset.reason}); this node's lease was written back`);
  const data = (l: { backendData?: unknown }) => (l.backendData === undefined ? '' : ` ${JSON.stringify(l.backendData)}`);
  out.push(s.ownLease ? `own lease: ${s.ownLease.subnet} ${s.ownLease.publicIP}${data(s.ownLease)}` : 'own lease: none');
  const skipped = new Map((s.desired?.skipped ?? []).map((k) => [k.subnet, k.reason]));
  out.push(`remote leases (${s.remoteLeases.length}):`);
  for (const l of s.remoteLeases) {
    const why = skipped.get(l.subnet);
    out.push(`  ${l.subnet.padEnd(18)} ${l.publicIP.padEnd(15)} ${(l.backendType ?? 'udp').padEnd(8)} ${why ? `NOT ROUTED: ${why}` : 'routed'}`);
  }
  const d = s.desired;
  if (d) {
    out.push('desired:');
    const dev = d.device;
    if (dev?.kind === 'tun') out.push(`  device ${dev.name} tun mtu ${dev.mtu} addr ${dev.address}`);
    else if (dev)
      out.push(`  device ${dev.name} vxlan id ${dev.vni} port ${dev.port} local ${dev.local} dev ${dev.dev} mac ${dev.mac} mtu ${dev.mtu} addr ${dev.address}`);
    for (const r of d.routes) out.push(`  route ${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`);
    if (d.udp)
      out.push(`  udp packet loop on ${d.udp.publicIP}:${d.udp.port}: ${d.udp.peers.map((p) => `${p.subnet} → ${p.publicIP}`).join(', ') || 'no peers'}`);
    for (const n of d.neighbours) out.push(`  neigh ${n.ip} lladdr ${n.mac} dev ${n.dev}`);
    for (const f of d.fdb) out.push(`  fdb ${f.mac} dst ${f.dst} dev ${f.dev}`);
    const fw = d.firewall;
    const table = [
      ...(fw.ipMasq ? [`ip-masq of ${fw.network}`] : []),
      ...(fw.vxlan ? [`VXLAN port ${fw.vxlan.port} only from [${fw.vxlan.peers.join(', ')}]`] : []),
      ...(fw.dns ? [`DNS to and from ${fw.dns} untracked`] : []),
    ];
    out.push(`  nft table ip weft: ${table.join(', ') || 'no rules'}`);
    out.push(
      fw.forwardRules
        ? `  forward rules: on: other tables' forward chains with policy drop (Docker's ip filter FORWARD) accept ${fw.network} (rules commented "weft forward", removed by --cleanup)`
        : `  forward rules: off (--no-forward-rules): a forward chain with policy drop in another table drops pod traffic`,
    );
  }
  if (s.datapath) {
    const c = s.datapath.counters;
    out.push(
      `packet loop: ${s.datapath.attached ? 'attached' : 'NOT ATTACHED'}; tx ${c.txPackets ?? 0} pkts, rx ${c.rxPackets ?? 0} pkts; dropped: ${c.droppedUnknownSource ?? 0} from sources without a lease, ${c.droppedMalformed ?? 0} malformed, ${c.droppedNotLocal ?? 0} not for this node, ${c.ttlExpired ?? 0} TTL expired; ${c.netUnreachable ?? 0} net unreachable`,
    );
  }
  if (s.services) out.push(...formatServices(s.services));
  out.push(s.drift.length === 0 ? 'programmed: in sync with desired' : `programmed: ${s.drift.length} difference(s) from desired:`);
  for (const c of s.drift) out.push(`  - ${c}`);
  if (s.plan) out.push('the next reconcile would run:', ...s.plan.split('\n').map((l) => `  ${l}`));
  if (s.lastReconcile)
    out.push(
      `last reconcile: ${s.lastReconcile.at}${s.lastReconcile.error ? ` FAILED: ${s.lastReconcile.error}` : `, ${s.lastReconcile.changes.length} change(s)`}`,
    );
  return out.join('\n');
}

function formatDns(d: NonNullable<ServicesStatus['dns']>): string {
  const head = `cluster DNS: ${d.ip}:53 on ${DNS_DEVICE}, zone ${d.zone}`;
  if (!d.queries) return `${head}, not serving yet`;
  const answered = Object.entries(d.rcodes ?? {})
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return `${head}, ${d.records?.names ?? 0} names; ${d.queries.udp} UDP + ${d.queries.tcp} TCP queries (${answered || 'none answered'}), ${d.forwarded ?? 0} forwarded to ${d.upstreams?.join(', ') || 'no upstream'}`;
}

function formatServices(v: ServicesStatus): string[] {
  const out: string[] = [];
  if (!v.started) out.push(`services: not synced yet (registry ${v.registryPrefix})`);
  else out.push(`services: ${v.services} Services, ${v.endpoints} endpoints, ${v.chains} chains (registry ${v.registryPrefix})`);
  if (v.lastSync) out.push(`  last sync: ${v.lastSync.at}, ${v.lastSync.ms} ms, ${v.lastSync.changes} change(s) (${v.lastSync.reason})`);
  if (v.lastFullSync) out.push(`  last full sync: ${v.lastFullSync.at}, ${v.lastFullSync.ms} ms`);
  if (v.error) out.push(`  FAILING: ${v.error}`);
  if (v.dns) out.push(formatDns(v.dns));
  if (v.bridgeNf !== '1')
    out.push(
      v.bridgeNf === 'missing'
        ? '  net.bridge.bridge-nf-call-iptables is missing (load br_netfilter): same-node replies through a Service are not un-NATed'
        : '  net.bridge.bridge-nf-call-iptables is 0: same-node replies through a Service are not un-NATed',
    );
  return out;
}
