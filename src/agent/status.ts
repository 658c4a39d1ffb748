import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { STATUS_FILE, STATUS_SOCKET, type AgentStatus } from './agent.js';

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
  out.push(`etcd: ${s.store.healthy ? 'reachable' : 'UNREACHABLE'} since ${s.store.since}`);
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
    else if (dev) out.push(`  device ${dev.name} vxlan id ${dev.vni} port ${dev.port} local ${dev.local} dev ${dev.dev} mac ${dev.mac} mtu ${dev.mtu} addr ${dev.address}`);
    for (const r of d.routes) out.push(`  route ${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`);
    if (d.udp) out.push(`  udp packet loop on ${d.udp.publicIP}:${d.udp.port}: ${d.udp.peers.map((p) => `${p.subnet} → ${p.publicIP}`).join(', ') || 'no peers'}`);
    for (const n of d.neighbours) out.push(`  neigh ${n.ip} lladdr ${n.mac} dev ${n.dev}`);
    for (const f of d.fdb) out.push(`  fdb ${f.mac} dst ${f.dst} dev ${f.dev}`);
    const fw = d.firewall;
    out.push(`  nft table ip weft: forward ${fw.network}${fw.ipMasq ? ', ip-masq' : ''}${fw.vxlan ? `, VXLAN port ${fw.vxlan.port} only from [${fw.vxlan.peers.join(', ')}]` : ''}`);
  }
  if (s.datapath) {
    const c = s.datapath.counters;
    out.push(`packet loop: ${s.datapath.attached ? 'attached' : 'NOT ATTACHED'}; tx ${c.txPackets ?? 0} pkts, rx ${c.rxPackets ?? 0} pkts; dropped: ${c.droppedUnknownSource ?? 0} from sources without a lease, ${c.droppedMalformed ?? 0} malformed, ${c.droppedNotLocal ?? 0} not for this node, ${c.ttlExpired ?? 0} TTL expired; ${c.netUnreachable ?? 0} net unreachable`);
  }
  out.push(s.drift.length === 0 ? 'programmed: in sync with desired' : `programmed: ${s.drift.length} difference(s) from desired:`);
  for (const c of s.drift) out.push(`  - ${c}`);
  if (s.plan) out.push('the next reconcile would run:', ...s.plan.split('\n').map((l) => `  ${l}`));
  if (s.lastReconcile) out.push(`last reconcile: ${s.lastReconcile.at}${s.lastReconcile.error ? ` FAILED: ${s.lastReconcile.error}` : `, ${s.lastReconcile.changes.length} change(s)`}`);
  return out.join('\n');
}
