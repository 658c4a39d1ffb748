import { existsSync } from 'node:fs';
import { KernelError } from '../kernel/errors.js';
import * as op from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { addrs, links } from '../kernel/state.js';
import { contains, parseAddr } from '../ip/cidr.js';
import { aliasPrefix, attachmentAlias, hostVethName } from './bridge.js';
import { HOST, teardownConf } from './config.js';
import { execPlugin, findPlugin, pluginVersions } from './invoke.js';
import { ipamRelease } from './ipam-call.js';
import * as ipam from './ipam/ipam.js';
import { deleteMasq, masqEntries } from './masq.js';
import { modeOf } from './mode.js';
import { Code, CniError, decodeResult, validAttachments, type Env, type IPConfig, type NetConf } from './spec.js';

/** DEL: idempotent; works without a netns and without prevResult, and always releases the IP. */
export async function del(conf: NetConf, env: Env): Promise<void> {
  const t = teardownConf(conf);
  const att = { containerID: env.containerId, ifname: env.ifname };
  // A delegated IPAM does not say what it released; without prevResult, the container's interface
  // (while it is still there) names the addresses to take out of the masquerade set.
  const inPod = t.ipMasq && t.ipamType && !decodeResult(conf.prevResult).ips?.length ? await podAddresses(env) : [];
  const mode = modeOf(conf.mode);
  const plan = new Plan();
  mode.remove(plan, env);
  try {
    await apply(plan);
  } catch (e) {
    throw e instanceof KernelError ? new CniError(Code.Kernel, e.message, e.detail.trim() || e.op) : e;
  } finally {
    const released = await ipamRelease(t, conf, env, att);
    if (t.ipMasq) await apply(deleteMasq(new Plan(), HOST, masqEntries(released.length ? released : inPod, t.ranges)));
    if (mode.forget) {
      const gone = new Set([...released, ...(decodeResult(conf.prevResult).ips ?? [])].map((ip) => ip.address.split('/')[0]));
      await apply(await mode.forget(conf, (ip) => gone.has(ip)));
    }
  }
}

async function podAddresses(env: Env): Promise<IPConfig[]> {
  if (!env.netns || !existsSync(env.netns)) return [];
  return (await addrs(env.netns, env.ifname).catch(() => [])).filter((a) => a.family === 4).map((a) => ({ address: `${a.address}/${a.prefix}` }));
}

/**
 * GC: frees every allocation and host veth of this network that no valid attachment owns, and with
 * weft-ipam what the mode keeps for addresses of its ranges that no one holds any more.
 */
export async function gc(conf: NetConf, env: Env): Promise<void> {
  const valid = validAttachments(conf);
  const t = teardownConf(conf);
  const keep = new Set(valid.map((a) => attachmentAlias(conf.name, a)));
  const prefix = aliasPrefix(conf.name);
  const plan = new Plan();
  for (const l of await links(HOST)) {
    if (l.alias?.startsWith(prefix) && !keep.has(l.alias)) plan.add(op.delLink({ ns: HOST, dev: l.name, tolerate: 'missing' }));
  }
  await apply(plan);
  if (t.dataDir) {
    const freed = await ipam.collect(t.dataDir, valid);
    // An ADD killed between creating the veth and naming it in its alias is found by its reservation.
    const orphans = new Plan();
    for (const r of freed) orphans.add(op.delLink({ ns: HOST, dev: hostVethName(r.containerId, r.ifname), tolerate: 'missing' }));
    if (t.ipMasq)
      deleteMasq(
        orphans,
        HOST,
        masqEntries(
          freed.map((r) => ({ address: r.ip })),
          t.ranges,
        ),
      );
    await apply(orphans);
    const mode = modeOf(conf.mode);
    if (mode.forget) {
      const held = ipam.reserved(t.dataDir);
      await apply(await mode.forget(conf, (ip) => !held.has(ip) && t.ranges.some((r) => contains(r, parseAddr(ip)))));
    }
    return;
  }
  // As libcni does, GC only an IPAM plugin that speaks spec 1.1.0 (host-local 1.1.1 does not).
  const plugin = findPlugin(t.ipamType!, env.path);
  if ((await pluginVersions(plugin)).includes('1.1.0')) await execPlugin(plugin, { command: 'GC', path: env.path }, conf);
}
