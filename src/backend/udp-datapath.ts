import { Worker } from 'node:worker_threads';
import { closeSync } from 'node:fs';
import { parseCidr } from '../ip/cidr.js';
import type { Datapath, DatapathStatus, UdpTunnel } from './types.js';
import { ipToU32 } from './udp-packet.js';
import { C, COUNTERS, controlBytes, countersBytes, writePeers, type CounterName } from './udp-shared.js';
import { closeFd, openTun, openUdp } from './udp-sys.js';

/**
 * The udp backend's packet loop, owned by the agent's main thread: a UDP socket on PublicIP:port,
 * an fd attached to flannel0, and two worker threads (udp-worker.ts), one per direction, each
 * making blocking-style calls through koffi without stalling the agent's event loop.
 *
 * `sync` runs after every reconcile (flannel0 exists by then): it publishes the peer table to the
 * workers and (re)attaches to flannel0 when not attached or when the device was deleted and
 * recreated under us (the workers see EBADFD and raise `detached`).
 */
/**
 * The workers' nice value: -10 unless WEFT_UDP_NICE says otherwise (0 leaves them at the agent's).
 * The loop carries what the kernel carries for vxlan in softirq, ahead of the node's processes.
 */
export function workerNice(env: string | undefined): number {
  const n = env === undefined || env === '' ? -10 : Number(env);
  return Number.isInteger(n) && n >= -20 && n <= 19 ? n : -10;
}

export class UdpDatapath implements Datapath {
  private readonly control = new SharedArrayBuffer(controlBytes);
  private readonly counters = new SharedArrayBuffer(countersBytes);
  private readonly ctl = new Int32Array(this.control);
  private readonly cnt = new Float64Array(this.counters);
  private udpFd = -1;
  private tunFd = -1;
  private workers: Worker[] = [];
  private exits: Promise<void>[] = [];
  private workerError = '';
  private attaches = 0;
  private closed = false;

  /**
   * `offload`: attach with IFF_VNET_HDR + TSO so the kernel hands over TCP super-packets, which the
   * tx loop segments and sends with UDP GSO (WEFT_UDP_OFFLOAD=0 turns it off: one packet per read).
   */
  constructor(
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void = () => undefined,
    private readonly offload = process.env.WEFT_UDP_OFFLOAD !== '0',
    private readonly nice = workerNice(process.env.WEFT_UDP_NICE),
  ) {}

  async sync(t: UdpTunnel): Promise<void> {
    if (this.closed) return;
    const own = parseCidr(t.ownSubnet);
    writePeers(
      this.ctl,
      { ownBase: Number(own.base), ownPrefix: own.prefix, tunAddr: ipToU32(t.address.split('/')[0]!), port: t.port },
      t.peers.map((p) => {
        const c = parseCidr(p.subnet);
        return { base: Number(c.base), prefix: c.prefix, publicIP: ipToU32(p.publicIP) };
      }),
    );
    if (this.udpFd < 0) this.udpFd = openUdp(ipToU32(t.publicIP), t.port);
    const alive = this.workers.length === 2 && Atomics.load(this.ctl, C.detached) === 0 && !this.workerError;
    if (alive) return;
    if (this.workers.length > 0) {
      this.log(this.workerError ? `udp packet loop failed (${this.workerError}); restarting it` : `${t.device} was recreated; reattaching the packet loop`);
      await this.stopWorkers();
    }
    this.tunFd = openTun(t.device, this.offload);
    Atomics.store(this.ctl, C.detached, 0);
    Atomics.store(this.ctl, C.stop, 0);
    this.workerError = '';
    for (const role of ['tx', 'rx'] as const) {
      const w = new Worker(new URL('./udp-worker.js', import.meta.url), {
        workerData: { role, tunFd: this.tunFd, udpFd: this.udpFd, control: this.control, counters: this.counters, offload: this.offload, nice: this.nice },
        // WEFT_UDP_CPU_PROF=DIR: a V8 CPU profile of each worker, written to DIR when it stops.
        ...(process.env.WEFT_UDP_CPU_PROF ? { execArgv: ['--cpu-prof', `--cpu-prof-dir=${process.env.WEFT_UDP_CPU_PROF}`] } : {}),
      });
      w.on('error', (e) => {
        this.workerError = e.message;
      });
      this.exits.push(new Promise<void>((r) => w.once('exit', () => r())));
      this.workers.push(w);
    }
    this.attaches++;
    this.log('udp packet loop running', { device: t.device, listen: `${t.publicIP}:${t.port}`, peers: t.peers.length, offload: this.offload });
  }

  private async stopWorkers(): Promise<void> {
    Atomics.store(this.ctl, C.stop, 1);
    // Each worker sees the flag within one idle poll (250 ms); bounded anyway.
    const timeout = new Promise<void>((r) => setTimeout(r, 2000).unref());
    await Promise.race([Promise.all(this.exits), timeout]);
    for (const w of this.workers) await w.terminate().catch(() => undefined);
    this.workers = [];
    this.exits = [];
    if (this.tunFd >= 0) closeSync(this.tunFd);
    this.tunFd = -1;
  }

  status(): DatapathStatus {
    const counters = Object.fromEntries(COUNTERS.map((n, i) => [n, this.cnt[i]!])) as Record<CounterName, number>;
    return { attached: this.workers.length === 2 && Atomics.load(this.ctl, C.detached) === 0, attaches: this.attaches, counters };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.stopWorkers();
    if (this.udpFd >= 0) closeFd(this.udpFd);
    this.udpFd = -1;
  }
}
