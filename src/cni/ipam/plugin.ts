import type { PluginFuncs } from '../skel.js';
import { Code, CniError, decodeResult, validAttachments, type NetConf } from '../spec.js';
import { allocate, collect, parseIpamConfig, release, status, verify, type IpamConfig } from './ipam.js';

function config(conf: NetConf): IpamConfig {
  const section = conf.ipam;
  if (!section) throw new CniError(Code.InvalidConfig, 'the config has no "ipam" section', 'weft-ipam reads its ranges from "ipam"');
  return parseIpamConfig(section, conf.name);
}

const attachment = (env: { containerId: string; ifname: string }) => ({ containerID: env.containerId, ifname: env.ifname });

/**
 * weft-ipam as a standalone IPAM plugin, for any main plugin (the reference bridge included): the
 * same config and on-disk state as host-local, and a `subnetFile` range when none is given.
 */
export const ipamPlugin: PluginFuncs = {
  add: async (conf, env) => ({ ...(await allocate(config(conf), attachment(env))), cniVersion: conf.cniVersion }),
  del: async (conf, env) => {
    await release(config(conf).dataDir, attachment(env));
  },
  check: (conf, env) => Promise.resolve(verify(config(conf).dataDir, attachment(env), decodeResult(conf.prevResult).ips ?? [])),
  gc: async (conf) => {
    await collect(config(conf).dataDir, validAttachments(conf));
  },
  status: (conf) => Promise.resolve(status(config(conf))),
};
