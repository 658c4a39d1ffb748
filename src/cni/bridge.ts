import { createHash } from 'node:crypto';
import * as op from '../kernel/ops.js';
import { Plan } from '../kernel/plan.js';
import { link, links, localLinkNames, neighbours, routes } from '../kernel/state.js';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { randomMac } from '../util/mac.js';
import { HOST, type BridgeConf } from './config.js';
import type { Mode, Wiring } from './mode.js';
import { Code, CniError, type Attachment, type Env, type Result } from './spec.js';

/** Bridge mode: a veth pair from the container to the node's bridge (overlay and routing backends). */

/** `veth` + 8 hex digits like the reference plugin, but derived, so DEL and GC find it again. */
export function hostVethName(containerId: string, ifname: string): string {
  return `veth${createHash('sha256').update(`${containerId}/${ifname}`).digest('hex').slice(0, 8)}`;
}

/** The host veth's alias names its attachment, so GC finds the veths no valid attachment owns. */
export const aliasPrefix = (network: string) => `weft:${network}:`;
export const attachmentAlias = (network: string, a: Attachment) => `${aliasPrefix(network)}${a.containerID}:${a.ifname}`;

export const bridgeMode: Mode = {
  claim(env) {
    const hostVeth = hostVethName(env.containerId, env.ifname);
    if (localLinkNames().has(hostVeth)) {
      throw new CniError(
        Code.InterfaceExists,
        `${env.containerId}/${env.ifname} is already attached (host interface ${hostVeth} exists)`,
        'DEL the attachment first',
      );
    }
  },

  link(plan, { c, conf, env, att, ips, mtu, podMac, hostMac }) {
    const hostVeth = hostVethName(env.containerId, env.ifname);
    // The veth pair first: when CNI_IFNAME is taken in the container this fails before anything changed.
    plan.add(op.addVeth({ ns: HOST, name: hostVeth, ...mtu, mac: hostMac, peer: { name: env.ifname, ...mtu, mac: podMac, netns: env.netns } }));
    if (!localLinkNames().has(c.bridge)) {
      plan.add(op.addBridge({ ns: HOST, name: c.bridge, mac: randomMac(), ...mtu, tolerate: 'exists' }));
    }
    plan.add(op.setLink({ ns: HOST, dev: c.bridge, up: true }));
    if (c.isGateway) {
      for (const ip of ips) {
        if (ip.gateway) plan.add(op.replaceAddr({ ns: HOST, addr: `${ip.gateway}/${ip.address.split('/')[1]}`, dev: c.bridge }));
      }
    }
    plan.add(
      op.setLink({ ns: HOST, dev: hostVeth, master: c.bridge, alias: attachmentAlias(conf.name, att), up: true, ...(c.hairpinMode ? { hairpin: true } : {}) }),
    );
  },

  async interfaces({ c, env, hostMac }, pod) {
    const bridgeMac = (await link(HOST, c.bridge))?.mac;
    return [{ name: c.bridge, ...(bridgeMac ? { mac: bridgeMac } : {}) }, { name: hostVethName(env.containerId, env.ifname), mac: hostMac }, pod];
  },

  hostSideExists: (env) => localLinkNames().has(hostVethName(env.containerId, env.ifname)),

  finish: (w) => (w.c.staticNeighbours ? pinNeighbours(w) : Promise.resolve(new Plan())),

  undo(plan, { c, env, ips }) {
    plan.add(op.delLink({ ns: HOST, dev: hostVethName(env.containerId, env.ifname), tolerate: 'missing' }));
    // The addresses are ours (IPAM just gave them), so the bridge's entries for them are ours to remove.
    if (c.staticNeighbours) unpinNeighbours(plan, c.bridge, ips);
  },

  remove(plan, env) {
    plan.add(op.delLink({ ns: HOST, dev: hostVethName(env.containerId, env.ifname), tolerate: 'missing' }));
  },

  // The pod's entries go with its interface; the bridge's stay until DEL or GC takes them.
  async forget(conf, gone) {
    if (conf.staticNeighbours !== true) return new Plan();
    const bridge = typeof conf.bridge === 'string' ? conf.bridge : 'cni0';
    const stale = (await neighbours(HOST, bridge)).filter((n) => gone(n.dst)).map((n) => ({ address: n.dst }));
    return unpinNeighbours(new Plan(), bridge, stale);
  },

  async checkHost(c, env, fail, prev) {
    const hostVeth = hostVethName(env.containerId, env.ifname);
    const host = await link(HOST, hostVeth);
    if (!host) return fail(`host interface ${hostVeth} is missing`);
    if (host.master !== c.bridge) fail(`host interface ${hostVeth} is not attached to ${c.bridge}`);
    if (c.staticNeighbours) await checkNeighbours(c, env, prev, fail);
  },
};

const v4 = <T extends { address: string }>(ips: T[]) => ips.filter((ip) => !ip.address.includes(':')).map((ip) => ({ ...ip, ip: ip.address.split('/')[0]! }));

/**
 * `staticNeighbours` (config.ts), after the links are made: the bridge's entry for each pod address
 * (the pod's MAC), the pod's entry for its gateway (the bridge's MAC), and the pod's own subnet
 * routed through that gateway instead of on-link, so that a pod reaches the other pods of its node
 * through the node (one routed hop, as Calico's pods do) and never ARPs for them. The pod ignores
 * the node's ICMP redirects, which would otherwise send it back to ARP for its peer.
 */
async function pinNeighbours({ c, env, ips, podMac }: Wiring): Promise<Plan> {
  const plan = new Plan();
  const all = await links(HOST);
  const bridgeMac = all.find((l) => l.name === c.bridge)?.mac;
  // The plugin makes its bridge with a fixed MAC. A bridge made without one takes the lowest MAC of
  // its ports and changes it as they come and go, leaving the pods' entries for their gateway naming
  // a MAC no port has; setting its address, even to the one it has, fixes it (the kernel then keeps it).
  if (bridgeMac && all.some((l) => l.master === c.bridge && l.mac === bridgeMac)) plan.add(op.setLink({ ns: HOST, dev: c.bridge, mac: bridgeMac }));
  for (const ip of v4(ips)) {
    plan.add(op.setNeigh({ ns: HOST, dst: ip.ip, mac: podMac, dev: c.bridge }));
    if (!c.isGateway || !ip.gateway || !bridgeMac) continue;
    plan.add(
      op.setNeigh({ ns: env.netns, dst: ip.gateway, mac: bridgeMac, dev: env.ifname }),
      op.setSysctl({ ns: env.netns, key: 'net.ipv4.conf.all.accept_redirects', value: '0' }),
      op.setSysctl({ ns: env.netns, key: `net/ipv4/conf/${env.ifname}/accept_redirects`, value: '0' }),
      op.replaceRoute({ ns: env.netns, dst: formatNetwork(parseCidr(ip.address)), via: ip.gateway, dev: env.ifname, onlink: true }),
    );
  }
  return plan;
}

/** The bridge's entries for `ips` go (DEL, GC, a failed ADD); the pod's go with its interface. */
function unpinNeighbours(plan: Plan, bridge: string, ips: { address: string }[]): Plan {
  for (const ip of v4(ips)) plan.add(op.delNeigh({ ns: HOST, dst: ip.ip, dev: bridge, tolerate: 'missing' }));
  return plan;
}

/** CHECK: the entries pinNeighbours made are there, permanent, with the MACs they must have. */
async function checkNeighbours(c: BridgeConf, env: Env, prev: Result, fail: (what: string) => never): Promise<void> {
  const podMac = prev.interfaces?.find((i) => i.name === env.ifname && i.sandbox)?.mac;
  const onBridge = await neighbours(HOST, c.bridge);
  const inPod = await neighbours(env.netns, env.ifname);
  const bridgeMac = (await link(HOST, c.bridge))?.mac;
  const table = await routes(env.netns);
  for (const ip of v4(prev.ips ?? [])) {
    const n = onBridge.find((x) => x.dst === ip.ip);
    if (!n?.permanent || (podMac && n.mac !== podMac)) fail(`${c.bridge} has no permanent neighbour ${ip.ip} lladdr ${podMac ?? '?'}`);
    if (!c.isGateway || !ip.gateway) continue;
    const g = inPod.find((x) => x.dst === ip.gateway);
    if (!g?.permanent || g.mac !== bridgeMac) fail(`${env.ifname} has no permanent neighbour ${ip.gateway} lladdr ${bridgeMac ?? '?'} (the bridge's MAC)`);
    const subnet = formatNetwork(parseCidr(ip.address));
    if (!table.some((r) => r.dst === subnet && r.via === ip.gateway)) fail(`the pod's route to ${subnet} does not go via ${ip.gateway}`);
  }
}
