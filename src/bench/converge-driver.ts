import { spawn, type ChildProcess } from 'node:child_process';
import { EtcdStore } from '../store/etcd.js';
import { parseCidr } from '../ip/cidr.js';
import { encodeLeaseAttrs, subnetKey } from '../subnet/lease.js';

/**
 * The timed half of `weft bench converge`, run inside the lab's etcd namespace (the only place etcd
 * answers). It writes a lease for a node that does not exist, then deletes it, and times how long
 * each node's agent takes to install and remove the route, watching every node with `ip monitor`.
 */
export interface ConvergeInput {
  endpoint: string;
  prefix: string;
  nodes: string[];
  rounds: number;
}

export interface ConvergeRound {
  addMs: number;
  removeMs: number;
}

const SUBNET = '10.244.250.0/24';
const TIMEOUT_MS = 20_000;

const input = JSON.parse(process.argv[2]!) as ConvergeInput;
const waiters = new Set<{ node: string; added: boolean; resolve: () => void }>();
const monitors: ChildProcess[] = input.nodes.map((ns) => {
  const m = spawn('ip', ['-n', ns, 'monitor', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buf = '';
  m.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const line of lines) {
      if (!line.includes('10.244.250.0/24')) continue;
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

const store = new EtcdStore({ endpoints: [input.endpoint], prefix: input.prefix });
const key = subnetKey(parseCidr(SUBNET));
const lease = encodeLeaseAttrs({ publicIP: '198.18.0.250', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:42:c6:12:00:fa' } });
const rounds: ConvergeRound[] = [];
try {
  await new Promise((r) => setTimeout(r, 300)); // the monitors must be listening before the first write
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
  process.stdout.write(JSON.stringify(rounds));
} finally {
  for (const m of monitors) m.kill();
  await store.close();
}
