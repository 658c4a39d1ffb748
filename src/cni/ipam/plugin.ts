import { Code, CniError, decodeResult, validAttachments, type Env, type NetConf, type Result } from '../spec.js';
import { allocate, collect, parseIpamConfig, release, status, verify } from './ipam.js';

/**
 * weft-ipam as a standalone IPAM plugin, for any main plugin (the reference bridge included): the
 * same config and on-disk state as host-local, and a `subnetFile` range when none is given.
 */
export async function ipamCommand(conf: NetConf, env: Env): Promise<Result | undefined> {
  const section = conf.ipam;
  if (!section) throw new CniError(Code.InvalidConfig, 'the config has no "ipam" section', 'weft-ipam reads its ranges from "ipam"');
  const config = parseIpamConfig(section, conf.name);
  const att = { containerID: env.containerId, ifname: env.ifname };
  switch (env.command) {
    case 'ADD':
      return { ...(await allocate(config, att)), cniVersion: conf.cniVersion };
    case 'DEL':
      await release(config.dataDir, att);
      return undefined;
    case 'CHECK':
      verify(config.dataDir, att, decodeResult(conf.prevResult).ips ?? []);
      return undefined;
    case 'GC':
      await collect(config.dataDir, validAttachments(conf));
      return undefined;
    case 'STATUS':
      status(config);
      return undefined;
    case 'VERSION':
      return undefined;
  }
}
