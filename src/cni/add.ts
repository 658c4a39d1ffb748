import { existsSync } from 'node:fs';
import { KernelError } from '../kernel/errors.js';
import * as op from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { link } from '../kernel/state.js';
import { randomMac } from '../util/mac.js';
import { HOST, parseBridgeConf, teardownConf } from './config.js';
import { ipamAdd, ipamRelease } from './ipam-call.js';
import { addMasq, masqEntries } from './masq.js';
import { modeOf, type Mode, type Wiring } from './mode.js';
import { Code, CniError, type Env, type IPConfig, type NetConf, type Result, type RouteEntry } from './spec.js';

/**
 * ADD: IPAM first, then one plan: the mode's links (for a bridge: bridge, veth pair created straight
 * into the container, attach), then in the container addresses, link up, routes. Anything that fails
 * undoes the links and the allocation, so nothing is left half-done.
 */
export async function add(conf: NetConf, env: Env): Promise<Result> {
  if (!existsSync(env.netns)) {
    throw new CniError(
      Code.UnknownContainer,
      `network namespace ${env.netns} does not exist`,
      'create the container namespace first, or pass its path in CNI_NETNS',
    );
  }
  const c = parseBridgeConf(conf, env);
  const mode = modeOf(c.mode);
  const att = { containerID: env.containerId, ifname: env.ifname };
  // The rollback below deletes the host side, so it must be ours: free before we start.
  mode.claim(env);
  const ipResult = await ipamAdd(c, conf, env, att);
  const w: Wiring = { c, conf, env, att, ips: ipResult.ips!, mtu: c.mtu === undefined ? {} : { mtu: c.mtu }, podMac: randomMac(), hostMac: randomMac() };
  try {
    return await wire(mode, w, ipResult);
  } catch (e) {
    const undo = new Plan();
    mode.undo(undo, w, e);
    await apply(undo).catch(() => undefined);
    await ipamRelease(teardownConf(conf), conf, env, att).catch(() => undefined);
    throw e;
  }
}

async function wire(mode: Mode, w: Wiring, ipResult: Result): Promise<Result> {
  const { c, conf, env, ips } = w;
  const plan = new Plan();
  mode.link(plan, w);
  const { ips: podIps, routes: routeList } = mode.pod ? mode.pod(plan, w, ipResult.routes ?? []) : podSide(plan, w, ipResult.routes ?? []);
  if (c.isGateway) plan.add(op.setSysctl({ ns: HOST, key: 'net.ipv4.ip_forward', value: '1' }));
  if (c.ipMasq) await addMasq(plan, HOST, masqEntries(ips));

  try {
    await apply(plan);
    if (mode.finish) await apply(await mode.finish(w));
  } catch (e) {
    throw await explain(e, env, mode);
  }
  const interfaces = await mode.interfaces(w, { name: env.ifname, mac: w.podMac, ...(c.mtu ? { mtu: c.mtu } : {}), sandbox: env.netns });
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces,
    ips: podIps.map((ip) => ({ ...ip, interface: interfaces.length - 1 })),
    routes: routeList,
  };
  // IPAM's answer wins, as in the reference plugins; else the cluster DNS (config.ts podDns).
  const dns = ipResult.dns?.nameservers?.length ? ipResult.dns : c.dns;
  if (dns) result.dns = dns;
  return result;
}

/** The pod's side as bridge and macvlan wire it: IPAM's addresses and routes, the default route when asked for. */
function podSide(plan: Plan, { c, env, ips }: Wiring, ipamRoutes: RouteEntry[]): { ips: IPConfig[]; routes: RouteEntry[] } {
  const pod = env.netns;
  for (const ip of ips) plan.add(op.addAddr({ ns: pod, addr: ip.address, dev: env.ifname }));
  plan.add(op.setLink({ ns: pod, dev: env.ifname, up: true }));
  const gw4 = ips.find((ip) => !ip.address.includes(':'))?.gateway;
  const routeList = [...ipamRoutes];
  if (c.isDefaultGateway && gw4 && !routeList.some((r) => r.dst === '0.0.0.0/0')) routeList.push({ dst: '0.0.0.0/0', gw: gw4 });
  for (const r of routeList) {
    const gw = r.gw ?? (r.dst.includes(':') ? undefined : gw4);
    plan.add(op.addRoute({ ns: pod, dst: r.dst, ...(gw ? { via: gw } : {}), dev: env.ifname }));
  }
  return { ips, routes: routeList };
}

async function explain(e: unknown, env: Env, mode: Mode): Promise<CniError> {
  if (!(e instanceof KernelError)) return e instanceof CniError ? e : new CniError(Code.Kernel, String(e));
  // If our device was not made but CNI_IFNAME is in the container, its creation is what failed:
  // the name was taken before us.
  if (e.kind === 'exists' && !mode.hostSideExists(env)) {
    if (await link(env.netns, env.ifname).catch(() => undefined)) {
      return new CniError(
        Code.InterfaceExists,
        `interface ${env.ifname} already exists in ${env.netns}`,
        'choose another CNI_IFNAME, or DEL the existing attachment first',
      );
    }
  }
  return new CniError(Code.Kernel, e.message, e.detail.trim() || e.op);
}
