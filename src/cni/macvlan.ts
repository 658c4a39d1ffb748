import { existsSync } from 'node:fs';
import * as op from '../kernel/ops.js';
import { HOST } from './config.js';
import type { Mode } from './mode.js';
import { Code, CniError } from './spec.js';

/** Macvlan mode: the pod's interface is a child of the node's underlay `master`; no bridge, veth or route on the node. */
export const macvlanMode: Mode = {
  claim() {},

  link(plan, { c, env, mtu, podMac }) {
    // Created straight into the container under its final name; the kernel checks the name there.
    plan.add(op.addMacvlan({ ns: HOST, name: env.ifname, parent: c.master!, ...mtu, mac: podMac, netns: env.netns }));
  },

  interfaces: (_w, pod) => Promise.resolve([pod]),

  hostSideExists: () => false,

  undo(plan, { env }, e) {
    // An interface that was in the container before this ADD is not ours to remove.
    if (!(e instanceof CniError && e.code === Code.InterfaceExists)) plan.add(op.delLink({ ns: env.netns, dev: env.ifname, tolerate: 'missing' }));
  },

  remove(plan, env) {
    if (env.netns && existsSync(env.netns)) plan.add(op.delLink({ ns: env.netns, dev: env.ifname, tolerate: 'missing' }));
  },

  async checkHost() {},
};
