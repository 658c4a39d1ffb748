import { createHash } from 'node:crypto';
import * as op from '../kernel/ops.js';
import { link, localLinkNames } from '../kernel/state.js';
import { randomMac } from '../util/mac.js';
import { HOST } from './config.js';
import type { Mode } from './mode.js';
import { Code, CniError, type Attachment } from './spec.js';

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

  undo(plan, env) {
    plan.add(op.delLink({ ns: HOST, dev: hostVethName(env.containerId, env.ifname), tolerate: 'missing' }));
  },

  remove(plan, env) {
    plan.add(op.delLink({ ns: HOST, dev: hostVethName(env.containerId, env.ifname), tolerate: 'missing' }));
  },

  async checkHost(c, env, fail) {
    const hostVeth = hostVethName(env.containerId, env.ifname);
    const host = await link(HOST, hostVeth);
    if (!host) return fail(`host interface ${hostVeth} is missing`);
    if (host.master !== c.bridge) fail(`host interface ${hostVeth} is not attached to ${c.bridge}`);
  },
};
