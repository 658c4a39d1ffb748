import type { Plan } from '../kernel/plan.js';
import { bridgeMode } from './bridge.js';
import type { BridgeConf } from './config.js';
import { macvlanMode } from './macvlan.js';
import { routedMode } from './routed.js';
import type { Attachment, Env, Interface, IPConfig, NetConf, Result, RouteEntry } from './spec.js';

/** What one ADD wires: the config, the invocation and the addresses IPAM gave. */
export interface Wiring {
  c: BridgeConf;
  conf: NetConf;
  env: Env;
  att: Attachment;
  ips: IPConfig[];
  /** `{ mtu }` when the config sets one, else empty. */
  mtu: { mtu?: number };
  podMac: string;
  hostMac: string;
}

/**
 * How a pod's interface reaches the node. Every mode makes CNI_IFNAME straight in the container;
 * ADD (add.ts) does the IPAM, the pod's addresses and routes, and the rollback around it.
 */
export interface Mode {
  /** Before IPAM: refuses an attachment whose host side exists already (a rollback would remove it). */
  claim(env: Env): void;
  /** The ops that make the pod's interface and the node's side of it. */
  link(plan: Plan, w: Wiring): void;
  /**
   * The pod's side (addresses, link up, neighbours, routes) when the mode wires it its own way;
   * returns the addresses and routes the result reports. Absent: add.ts puts IPAM's addresses and
   * routes on the pod's interface as they are.
   */
  pod?(plan: Plan, w: Wiring, ipamRoutes: RouteEntry[]): { ips: IPConfig[]; routes: RouteEntry[] };
  /** After the plan applied: a second plan of what needs the first in place (bridge.ts, staticNeighbours). */
  finish?(w: Wiring): Promise<Plan>;
  /** After the plan applied: the result's interfaces, `pod` (the container's) last. */
  interfaces(w: Wiring, pod: Interface): Promise<Interface[]>;
  /** Whether this attachment's host-side device exists (a failed ADD asks whether it made it). */
  hostSideExists(env: Env): boolean;
  /** Undoes what an ADD that failed with `e` made on the node (IPAM's release is add.ts's). */
  undo(plan: Plan, w: Wiring, e: unknown): void;
  /** DEL's link removal; idempotent. */
  remove(plan: Plan, env: Env): void;
  /**
   * DEL and GC: removes what the mode keeps on the node per pod address, beyond the pod's links, for
   * the addresses `gone` says no attachment holds. Reads only the raw config, which may no longer parse.
   */
  forget?(conf: NetConf, gone: (ip: string) => boolean): Promise<Plan>;
  /** CHECK of the node's side (and what the mode put in the pod besides addresses and routes); `fail` throws. */
  checkHost(c: BridgeConf, env: Env, fail: (what: string) => never, prev: Result): Promise<void>;
}

export function modeOf(mode: unknown): Mode {
  return mode === 'macvlan' ? macvlanMode : mode === 'routed' ? routedMode : bridgeMode;
}
