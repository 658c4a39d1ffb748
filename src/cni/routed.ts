import * as op from '../kernel/ops.js';
import { link, neighbours, routes } from '../kernel/state.js';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { attachmentAlias, bridgeMode, hostVethName } from './bridge.js';
import { HOST } from './config.js';
import type { Mode } from './mode.js';
import { Code, CniError, type IPConfig, type RouteEntry } from './spec.js';

/**
 * Routed mode, as Calico wires a pod: no bridge. The pod has its address as a /32 and a default
 * route via a link-local gateway that no device holds, with a permanent neighbour entry mapping the
 * gateway to the host veth's MAC, so the pod never ARPs. The node has the host end of the veth up
 * with no address, a /32 route to the pod over it, and a permanent neighbour entry for the pod, so
 * the node never ARPs either. Hairpin works by routing: a packet the service proxy sends back to
 * the pod it came from goes out the veth it came in (masqueraded, since a pod drops packets that
 * carry its own address as source).
 *
 * The node's own subnet has no connected route without a bridge: an ADD adds an `unreachable`
 * route for it when it has none, so a packet to an address no pod holds is answered with ICMP host
 * unreachable at once instead of leaving by the default route (or, with the udp backend, looping
 * through flannel0). The /32 routes are more specific; the agent leaves both alone (it owns only
 * routes outside its own subnet). Like cni0 in bridge mode, the route stays when pods go.
 */
export const ROUTED_GATEWAY = '169.254.1.1';

/** The address on the pod's interface: the allocated one as a /32. */
const host32 = (ip: IPConfig) => `${ip.address.split('/')[0]}/32`;

function v4Only(ips: IPConfig[]): void {
  const v6 = ips.find((ip) => ip.address.includes(':'));
  if (v6) throw new CniError(Code.InvalidConfig, `routed mode is IPv4 only; IPAM gave ${v6.address}`, 'use an IPv4 range, or "mode": "bridge"');
}

export const routedMode: Mode = {
  claim: (env) => bridgeMode.claim(env),

  link(plan, { conf, env, att, ips, mtu, podMac, hostMac }) {
    v4Only(ips);
    const hostVeth = hostVethName(env.containerId, env.ifname);
    plan.add(op.addVeth({ ns: HOST, name: hostVeth, ...mtu, mac: hostMac, peer: { name: env.ifname, ...mtu, mac: podMac, netns: env.netns } }));
    // The alias names the attachment, so GC finds this veth as it finds bridge mode's.
    plan.add(op.setLink({ ns: HOST, dev: hostVeth, alias: attachmentAlias(conf.name, att), up: true }));
    for (const ip of ips) {
      // Added only where the subnet has no route yet: an IPAM that hands out /32s has no subnet to
      // cover, and a cni0 of bridge-mode pods on the same node already routes it (a replace would take it).
      const subnet = parseCidr(ip.address);
      if (subnet.prefix < 32) plan.add(op.addRoute({ ns: HOST, type: 'unreachable', dst: formatNetwork(subnet), tolerate: 'exists' }));
      const addr = ip.address.split('/')[0]!;
      plan.add(op.addRoute({ ns: HOST, dst: `${addr}/32`, dev: hostVeth }));
      plan.add(op.setNeigh({ ns: HOST, dst: addr, mac: podMac, dev: hostVeth }));
    }
  },

  pod(plan, { env, ips, hostMac }, ipamRoutes) {
    const pod = env.netns;
    const podIps = ips.map((ip) => ({ ...ip, address: host32(ip), gateway: ROUTED_GATEWAY }));
    // Every route goes through the one gateway the pod can reach; a default route always, as Calico's.
    const routeList: RouteEntry[] = ipamRoutes.filter((r) => !r.dst.includes(':')).map((r) => ({ ...r, gw: ROUTED_GATEWAY }));
    if (!routeList.some((r) => r.dst === '0.0.0.0/0')) routeList.unshift({ dst: '0.0.0.0/0', gw: ROUTED_GATEWAY });
    for (const ip of podIps) plan.add(op.addAddr({ ns: pod, addr: ip.address, dev: env.ifname }));
    // Up before the routes: the kernel refuses a route over a device that is down.
    plan.add(op.setLink({ ns: pod, dev: env.ifname, up: true }));
    plan.add(op.setNeigh({ ns: pod, dst: ROUTED_GATEWAY, mac: hostMac, dev: env.ifname }));
    for (const r of routeList) plan.add(op.addRoute({ ns: pod, dst: r.dst, via: ROUTED_GATEWAY, dev: env.ifname, onlink: true }));
    return { ips: podIps, routes: routeList };
  },

  interfaces({ env, hostMac }, pod) {
    return Promise.resolve([{ name: hostVethName(env.containerId, env.ifname), mac: hostMac }, pod]);
  },

  hostSideExists: (env) => bridgeMode.hostSideExists(env),
  undo: (plan, { env }) => bridgeMode.remove(plan, env),
  // The /32 route and the neighbour entry go with the host veth.
  remove: (plan, env) => bridgeMode.remove(plan, env),

  async checkHost(_c, env, fail, prev) {
    const hostVeth = hostVethName(env.containerId, env.ifname);
    const host = await link(HOST, hostVeth);
    if (!host) return fail(`host interface ${hostVeth} is missing`);
    if (host.master) fail(`host interface ${hostVeth} is attached to ${host.master}; routed mode has no bridge`);
    if (!host.up) fail(`host interface ${hostVeth} is down`);
    const podMac = prev.interfaces?.find((i) => i.name === env.ifname && i.sandbox)?.mac;
    const [table, hostNeigh, podNeigh] = await Promise.all([routes(HOST), neighbours(HOST, hostVeth), neighbours(env.netns, env.ifname)]);
    for (const ip of prev.ips ?? []) {
      const addr = ip.address.split('/')[0]!;
      if (!table.some((r) => r.dst === `${addr}/32` && r.dev === hostVeth && !r.type)) fail(`route ${addr}/32 dev ${hostVeth} is missing`);
      const n = hostNeigh.find((x) => x.dst === addr);
      if (!n?.permanent || (podMac && n.mac !== podMac)) fail(`permanent neighbour ${addr} lladdr ${podMac ?? '?'} dev ${hostVeth} is missing`);
    }
    const gw = podNeigh.find((x) => x.dst === ROUTED_GATEWAY);
    if (!gw?.permanent || gw.mac !== host.mac) fail(`permanent neighbour ${ROUTED_GATEWAY} lladdr ${host.mac} dev ${env.ifname} is missing in the pod`);
  },
};
