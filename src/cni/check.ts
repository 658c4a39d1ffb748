import { existsSync } from 'node:fs';
import { addrs, link, routes } from '../kernel/state.js';
import { formatNetwork, parseCidr } from '../ip/cidr.js';
import { parseBridgeConf } from './config.js';
import { execPlugin, findPlugin } from './invoke.js';
import { ipamCheck } from './ipam-call.js';
import * as ipam from './ipam/ipam.js';
import { modeOf } from './mode.js';
import { Code, CniError, decodeResult, type Env, type NetConf } from './spec.js';

/** CHECK: what ADD made is still there, as prevResult describes it. */
export async function check(conf: NetConf, env: Env): Promise<void> {
  if (conf.prevResult === undefined) throw new CniError(Code.InvalidConfig, 'CHECK needs prevResult', 'the runtime passes the cached ADD result as prevResult');
  if (!existsSync(env.netns)) throw new CniError(Code.UnknownContainer, `network namespace ${env.netns} does not exist`);
  const c = parseBridgeConf(conf, env);
  const prev = decodeResult(conf.prevResult);
  await ipamCheck(c, conf, env, { containerID: env.containerId, ifname: env.ifname }, prev.ips ?? []);

  const fail = (what: string): never => {
    throw new CniError(Code.InvalidConfig, `CHECK failed for ${env.containerId}/${env.ifname}: ${what}`);
  };
  const podIf = prev.interfaces?.find((i) => i.name === env.ifname && i.sandbox);
  if (!podIf) return fail(`prevResult has no interface ${env.ifname} with a sandbox`);
  const podLink = await link(env.netns, env.ifname).catch(() => undefined);
  if (!podLink) return fail(`interface ${env.ifname} is missing in ${env.netns}`);
  if (podIf.mac && podLink.mac !== podIf.mac) fail(`${env.ifname} has MAC ${podLink.mac}, prevResult says ${podIf.mac}`);
  if (!podLink.up) fail(`${env.ifname} is down`);
  const podAddrs = await addrs(env.netns, env.ifname);
  for (const ip of prev.ips ?? []) {
    if (!podAddrs.some((a) => `${a.address}/${a.prefix}` === ip.address)) fail(`address ${ip.address} is missing on ${env.ifname}`);
  }
  const table = await routes(env.netns);
  for (const r of prev.routes ?? []) {
    const dst = r.dst === '0.0.0.0/0' ? 'default' : formatNetwork(parseCidr(r.dst));
    if (!r.dst.includes(':') && !table.some((t) => t.dst === dst && t.dev === env.ifname)) fail(`route to ${r.dst} is missing`);
  }
  await modeOf(c.mode).checkHost(c, env, fail, prev);
}

/**
 * STATUS: ADD can succeed (subnet file readable, IPAM ready, a free address), else code 50. A
 * delegated IPAM plugin older than 1.1.0 cannot answer STATUS; only its 50/51 count.
 */
export async function status(conf: NetConf, env: Env): Promise<void> {
  const c = parseBridgeConf(conf, env);
  if (c.ipamConfig) {
    ipam.status(c.ipamConfig);
    return;
  }
  let plugin: string;
  try {
    plugin = findPlugin(c.ipamPlugin!, env.path);
  } catch (e) {
    // An IPAM plugin that is not installed is IPAM that cannot serve an ADD.
    throw e instanceof CniError ? new CniError(Code.NotAvailable, e.message, e.details) : e;
  }
  await execPlugin(plugin, { command: 'STATUS', path: env.path }, conf).catch((e: CniError) => {
    if (e.code === Code.NotAvailable || e.code === Code.NotAvailableLimited) throw e;
  });
}
