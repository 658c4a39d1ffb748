/**
 * Memory the agent's main thread shares with the udp packet-loop workers (SharedArrayBuffers):
 * the workers never return to their event loop while traffic flows, so they read settings and the
 * peer table from here (a seqlock: the version is odd while the main thread writes) and write their
 * counters here for the status.
 */
import { PeerTable, type Peer } from './udp-packet.js';

export const MAX_PEERS = 8192;

/** Int32 slots of the control block. */
export const C = {
  stop: 0,
  version: 1,
  count: 2,
  ownBase: 3,
  ownPrefix: 4,
  /** The flannel0 address: source of the ICMP errors the agent sends. */
  tunAddr: 5,
  /** Set by a worker when the TUN fd lost its device (deleted): the main thread reattaches. */
  detached: 6,
  port: 7,
  peers: 16,
} as const;

export const controlBytes = (C.peers + 3 * MAX_PEERS) * 4;

/** Float64 slots of the counters block. */
export const COUNTERS = [
  'txPackets', // TUN → UDP, sent to a peer
  'txBytes',
  'rxPackets', // UDP → TUN, from a peer
  'rxBytes',
  'droppedUnknownSource', // datagram from an address that holds no lease
  'droppedMalformed', // datagram that is not one IPv4 packet
  'droppedNotLocal', // inner destination outside this node's subnet
  'netUnreachable', // TUN packet to an address in no lease: ICMP net unreachable sent back
  'ttlExpired', // TUN packet with TTL ≤ 1: dropped
  'droppedNonIPv4', // TUN packet that is not IPv4
  'sendErrors', // sendto failed (e.g. buffer full, no route to the peer)
  'tunWriteErrors',
] as const;
export type CounterName = (typeof COUNTERS)[number];
export const K = Object.fromEntries(COUNTERS.map((n, i) => [n, i])) as Record<CounterName, number>;
export const countersBytes = COUNTERS.length * 8;

export interface Settings {
  ownBase: number;
  ownPrefix: number;
  tunAddr: number;
  port: number;
}

/** Main thread: publishes this node's settings and a new peer table. */
export function writePeers(ctl: Int32Array, s: Settings, peers: Peer[]): void {
  const n = Math.min(peers.length, MAX_PEERS);
  const v = Atomics.load(ctl, C.version);
  Atomics.store(ctl, C.version, v + 1);
  ctl[C.ownBase] = s.ownBase | 0;
  ctl[C.ownPrefix] = s.ownPrefix;
  ctl[C.tunAddr] = s.tunAddr | 0;
  ctl[C.port] = s.port;
  for (let i = 0; i < n; i++) {
    const p = peers[i]!;
    ctl[C.peers + 3 * i] = p.base | 0;
    ctl[C.peers + 3 * i + 1] = p.prefix;
    ctl[C.peers + 3 * i + 2] = p.publicIP | 0;
  }
  ctl[C.count] = n;
  Atomics.store(ctl, C.version, v + 2);
}

/** Worker: reads a consistent peer table (retrying while a write is in progress). */
export function readPeers(ctl: Int32Array): { version: number; table: PeerTable; settings: Settings } {
  for (;;) {
    const v = Atomics.load(ctl, C.version);
    if (v & 1) continue;
    const n = ctl[C.count]!;
    const settings = { ownBase: ctl[C.ownBase]! >>> 0, ownPrefix: ctl[C.ownPrefix]!, tunAddr: ctl[C.tunAddr]! >>> 0, port: ctl[C.port]! };
    const peers: Peer[] = [];
    for (let i = 0; i < n; i++) peers.push({ base: ctl[C.peers + 3 * i]! >>> 0, prefix: ctl[C.peers + 3 * i + 1]!, publicIP: ctl[C.peers + 3 * i + 2]! >>> 0 });
    if (Atomics.load(ctl, C.version) === v) return { version: v, table: new PeerTable(peers), settings };
  }
}
