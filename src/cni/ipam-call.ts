import { execPlugin, findPlugin } from './invoke.js';
import * as ipam from './ipam/ipam.js';
import type { BridgeConf, Teardown } from './config.js';
import { Code, CniError, decodeResult, type Attachment, type Env, type IPConfig, type NetConf, type Result } from './spec.js';

/** The weft plugin's IPAM step: weft-ipam in this process, or the delegated plugin exec'd as CNI says. */

export function invokeEnv(env: Env) {
  return {
    command: env.command,
    containerId: env.containerId,
    netns: env.netns,
    ifname: env.ifname,
    args: [...env.args].map(([k, v]) => `${k}=${v}`).join(';'),
    path: env.path,
  };
}

export async function ipamAdd(c: BridgeConf, conf: NetConf, env: Env, att: Attachment): Promise<Result> {
  if (c.ipamConfig) return ipam.allocate(c.ipamConfig, att);
  const raw = await execPlugin(c.ipamPlugin!, { ...invokeEnv(env), command: 'ADD' }, conf);
  const r = decodeResult(raw);
  if (!r.ips?.length) throw new CniError(Code.Ipam, `IPAM plugin ${conf.ipam?.type} returned no IP addresses`);
  return r;
}

/** Releases the attachment's addresses and returns them (from prevResult for a delegated plugin). */
export async function ipamRelease(t: Teardown, conf: NetConf, env: Env, att: Attachment): Promise<IPConfig[]> {
  if (t.dataDir) return (await ipam.release(t.dataDir, att)).map((address) => ({ address }));
  await execPlugin(findPlugin(t.ipamType!, env.path), { ...invokeEnv(env), command: 'DEL' }, conf);
  return decodeResult(conf.prevResult).ips ?? [];
}

export async function ipamCheck(c: BridgeConf, conf: NetConf, env: Env, att: Attachment, ips: IPConfig[]): Promise<void> {
  if (c.ipamConfig) ipam.verify(c.ipamConfig.dataDir, att, ips);
  else await execPlugin(c.ipamPlugin!, { ...invokeEnv(env), command: 'CHECK' }, conf);
}
