import { spawn, type ChildProcess } from 'node:child_process';
import { EtcdStore } from '../store/etcd.js';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { encodeLeaseAttrs, SUBNETS_PREFIX, subnetKey } from '../subnet/lease.js';

/**
 * The timed half of `weft bench converge`, run inside the lab's etcd namespace (the only place etcd
 * answers). It writes a lease for a node that does not exist, then deletes it, and times how long
 * each node's agent takes to install and remove the route, watching every node with `ip monitor`.
 * Around that it reads every member's /metrics: the raft writes of a quiet lab over `steadySeconds`,
 * the events etcd sent to watchers per lease change, and what one renewal of that lease costs done as
 * the agents do it (a keepalive on its etcd lease) and as flanneld does it (a rewrite with a new lease).
 */
export interface ConvergeInput {
  endpoint: string;
  prefix: string;
  nodes: string[];
  rounds: number;
  steadySeconds: number;
}

export interface ConvergeRound {
  addMs: number;
  removeMs: number;
}

export interface EtcdLoad {
  /** Raft proposals committed while nothing happened but the agents running. */
  steadyWrites: number;
  steadySeconds: number;
  /** Events etcd sent to watchers (all members), per lease added or removed. */
  eventsPerChange: number;
  /** Watchers open on all members, and watch streams. */
  watchers: number;
  streams: number;
  /** One renewal, as the agents do it: raft writes and watch events. */
  keepalive: { writes: number; events: number };
  /** One renewal by rewrite (flanneld, and Weft before): raft writes, counting the revoke of the lease it leaves behind, and watch events. */
  rewrite: { writes: number; events: number };
}

export interface ConvergeOutput {
  rounds: ConvergeRound[];
  load: EtcdLoad;
}

const TIMEOUT_MS = 20_000;
const RENEWALS = 5;

const input = JSON.parse(process.argv[2]!) as ConvergeInput;
const members = input.endpoint.split(',');
const store = new EtcdStore({ endpoints: members, prefix: input.prefix });
// A subnet no node holds: the lab's nodes lease random ones, and writing over a node's own lease would take it.
const held = new Set((await store.list(SUBNETS_PREFIX)).items.map((kv) => kv.key));
const subnet = Array.from({ length: 256 }, (_, i) => parseCidr(`10.244.${255 - i}.0/24`)).find((c) => !held.has(subnetKey(c)));
if (!subnet) throw new Error('every /24 of 10.244.0.0/16 is leased; the bench needs one free');
const SUBNET = formatNetwork(subnet);
const key = subnetKey(subnet);
const waiters = new Set<{ node: string; added: boolean; resolve: () => void }>();
const monitors: ChildProcess[] = input.nodes.map((ns) => {
  const m = spawn('ip', ['-n', ns, 'monitor', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buf = '';
  m.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const line of lines) {
      if (line.split(' ')[line.startsWith('Deleted') ? 1 : 0] !== SUBNET) continue;
      const added = !line.startsWith('Deleted');
      for (const w of waiters) {
        if (w.node === ns && w.added === added) {
          waiters.delete(w);
          w.resolve();
        }
      }
    }
  });
  return m;
});

function everyNode(added: boolean): Promise<void> {
  return Promise.all(input.nodes.map((node) => new Promise<void>((resolve) => waiters.add({ node, added, resolve })))).then(() => undefined);
}

function timed(p: Promise<void>, started: number): Promise<number> {
  return Promise.race([
    p.then(() => performance.now() - started),
    new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`not every node converged within ${TIMEOUT_MS} ms`)), TIMEOUT_MS).unref()),
  ]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Counters {
  /** The raft index every member agrees on: the most committed proposals any member reports. */
  writes: number;
  events: number;
  watchers: number;
  streams: number;
}

/** Every member's counters: writes are the cluster's (one raft log), events and watchers add up over members. */
async function counters(): Promise<Counters> {
  const all = await Promise.all(
    members.map(async (url) => {
      const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
      return {
        writes: metric('etcd_server_proposals_committed_total'),
        events: metric('etcd_debugging_mvcc_events_total'),
        watchers: metric('etcd_debugging_mvcc_watcher_total'),
        streams: metric('etcd_debugging_mvcc_watch_stream_total'),
      };
    }),
  );
  const sum = (k: keyof Counters) => all.reduce((n, c) => n + c[k], 0);
  return { writes: Math.max(...all.map((c) => c.writes)), events: sum('events'), watchers: sum('watchers'), streams: sum('streams') };
}

/** Writes and events caused by `fn`, after etcd has sent what it caused (events go out asynchronously). */
async function cost(fn: () => Promise<unknown>): Promise<{ writes: number; events: number }> {
  const before = await counters();
  await fn();
  await sleep(500);
  const after = await counters();
  return { writes: after.writes - before.writes, events: after.events - before.events };
}

const lease = encodeLeaseAttrs({ publicIP: '198.18.0.250', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:42:c6:12:00:fa' } });
const rounds: ConvergeRound[] = [];
try {
  await sleep(300); // the monitors must be listening before the first write
  const quiet = await counters();
  await sleep(input.steadySeconds * 1000);
  const steady = await counters();
  for (let i = 0; i < input.rounds; i++) {
    const added = everyNode(true);
    let started = performance.now();
    await store.put(key, lease, 600);
    const addMs = await timed(added, started);
    const removed = everyNode(false);
    started = performance.now();
    await store.delete(key);
    const removeMs = await timed(removed, started);
    rounds.push({ addMs, removeMs });
  }
  await sleep(500);
  const changed = await counters();
  await store.createIfAbsent(key, lease, 600);
  const keepalive = await cost(async () => {
    for (let i = 0; i < RENEWALS; i++) await store.renew(key, lease, 600);
  });
  const rewrite = await cost(async () => {
    for (let i = 0; i < RENEWALS; i++) await store.replaceIfValue(key, lease, lease, 600);
  });
  await store.delete(key);
  const per = (c: { writes: number; events: number }, extra = 0) => ({ writes: c.writes / RENEWALS + extra, events: c.events / RENEWALS });
  const load: EtcdLoad = {
    steadyWrites: steady.writes - quiet.writes,
    steadySeconds: input.steadySeconds,
    eventsPerChange: (changed.events - steady.events) / (2 * input.rounds),
    watchers: steady.watchers,
    streams: steady.streams,
    keepalive: per(keepalive),
    // Each rewrite leaves its previous etcd lease without keys; etcd revokes it when it runs out: one more write.
    rewrite: per(rewrite, 1),
  };
  process.stdout.write(JSON.stringify({ rounds, load } satisfies ConvergeOutput));
} finally {
  for (const m of monitors) m.kill();
  await store.close();
}
